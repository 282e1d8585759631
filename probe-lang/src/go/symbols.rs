//! Runtime variables: `allglen`/`allgptr` (fallback `allgs`) and `waitReasonStrings`, from the
//! symbol table when there is one; in a stripped binary from the code of runtime functions
//! that load them (found through the pclntab) and, for the wait reasons, from the table's
//! known contents. Every address is checked to lie in a writable section of the binary.

use super::{elf::Elf, error::GoError, pclntab::Pclntab, x86};

/// Where the goroutine list lives (unrelocated addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AllgSyms {
    pub allglen: Option<u64>,
    pub allgptr: Option<u64>,
    /// The `allgs` slice header (ptr, len, cap).
    pub allgs: Option<u64>,
    /// How they were found, for the notes.
    pub source: &'static str,
}

fn in_writable(elf: &Elf, addr: u64, len: u64) -> bool {
    elf.writable_ranges()
        .iter()
        .any(|&(lo, hi)| addr >= lo && addr.checked_add(len).is_some_and(|e| e <= hi))
}

/// RIP-relative loads in the code of the function named `name`.
fn loads_in(elf: &Elf, pcln: &Pclntab, name: &str) -> Option<Vec<(x86::Op, u64)>> {
    let f = pcln.func_by_name(name)?;
    let len = usize::try_from(f.end.checked_sub(f.entry)?).ok()?;
    let code = elf.bytes_at(f.entry, len.min(1 << 16))?;
    Some(
        x86::rip_refs(code, f.entry)
            .into_iter()
            .map(|(_, op, t)| (op, t))
            .collect(),
    )
}

pub(crate) fn find_allg(elf: &Elf, pcln: &Pclntab) -> Result<AllgSyms, GoError> {
    let sym = |n: &str| {
        elf.symbol(n)
            .map(|(a, _)| a)
            .filter(|&a| in_writable(elf, a, 8))
    };
    let by_symbols = AllgSyms {
        allglen: sym("runtime.allglen"),
        allgptr: sym("runtime.allgptr"),
        allgs: sym("runtime.allgs").filter(|&a| in_writable(elf, a, 24)),
        source: "symbol table",
    };
    if (by_symbols.allglen.is_some() && by_symbols.allgptr.is_some()) || by_symbols.allgs.is_some()
    {
        return Ok(by_symbols);
    }
    // Stripped: forEachGRace loads allglen then allgptr (atomicAllG, inlined); allgadd
    // references both (it stores them). forEachG loads allgs.ptr then allgs.len.
    let mut found = AllgSyms {
        source: "code of runtime.forEachGRace/forEachG (stripped binary)",
        ..AllgSyms::default()
    };
    let adder: Vec<u64> = loads_in(elf, pcln, "runtime.allgadd")
        .unwrap_or_default()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if let Some(refs) = loads_in(elf, pcln, "runtime.forEachGRace") {
        let loads: Vec<u64> = refs
            .iter()
            .filter(|(op, t)| *op == x86::Op::Load && in_writable(elf, *t, 8))
            .map(|(_, t)| *t)
            .collect();
        if let [len, ptr, ..] = loads[..]
            && len != ptr
            && adder.contains(&len)
            && adder.contains(&ptr)
        {
            found.allglen = Some(len);
            found.allgptr = Some(ptr);
        }
    }
    if let Some(refs) = loads_in(elf, pcln, "runtime.forEachG") {
        let loads: Vec<u64> = refs
            .iter()
            .filter(|(op, t)| *op == x86::Op::Load && in_writable(elf, *t, 8))
            .map(|(_, t)| *t)
            .collect();
        if let [a, b, ..] = loads[..] {
            let base = a.min(b);
            if a.abs_diff(b) == 8 && in_writable(elf, base, 24) && adder.contains(&base) {
                found.allgs = Some(base);
            }
        }
    }
    if found.allglen.is_some() || found.allgs.is_some() {
        return Ok(found);
    }
    Err(GoError::NoAllgs(
        "in a stripped binary: no symbol table, and the code of runtime.forEachGRace, \
         runtime.forEachG and runtime.allgadd did not give consistent addresses"
            .into(),
    ))
}

/// Longest wait reason accepted, and most entries (waitReason is a uint8).
const MAX_REASON_LEN: u64 = 64;
const MAX_REASONS: usize = 256;

/// A Go string (ptr, len) in the binary's static data, if it looks like a wait reason.
fn static_string(elf: &Elf, ptr: u64, len: u64) -> Option<String> {
    if len == 0 {
        return Some(String::new());
    }
    if len > MAX_REASON_LEN {
        return None;
    }
    let b = elf.bytes_at(ptr, len as usize)?;
    if !b.iter().all(|c| (0x20..0x7f).contains(c)) {
        return None;
    }
    String::from_utf8(b.to_vec()).ok()
}

fn read_table(elf: &Elf, addr: u64, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..max.min(MAX_REASONS) {
        let Some(at) = addr.checked_add(16 * i as u64) else {
            break;
        };
        let (Some(ptr), Some(len)) = (
            elf.u64_at(at),
            at.checked_add(8).and_then(|a| elf.u64_at(a)),
        ) else {
            break;
        };
        match static_string(elf, ptr, len) {
            Some(s) if i == 0 || !s.is_empty() => out.push(s),
            _ => break,
        }
    }
    out
}

/// Strings every Go 1.17+ table has.
const KNOWN: &[&str] = &[
    "GC assist marking",
    "IO wait",
    "chan send",
    "chan receive",
    "select",
];

fn plausible(t: &[String]) -> bool {
    t.first().is_some_and(String::is_empty) && KNOWN.iter().all(|k| t.iter().any(|s| s == k))
}

/// The target's own `runtime.waitReasonStrings`, read from the binary's data (the runtime
/// never writes it). Returns the table and how it was found.
pub(crate) fn wait_reasons(elf: &Elf) -> Result<(Vec<String>, &'static str), String> {
    if let Some((addr, size)) = elf.symbol("runtime.waitReasonStrings") {
        let n = if size > 0 {
            (size / 16) as usize
        } else {
            MAX_REASONS
        };
        let t = read_table(elf, addr, n);
        if plausible(&t) {
            return Ok((t, "symbol table"));
        }
    }
    // Stripped: the (ptr, len) pair pointing at "GC assist marking" is entry 1.
    const FIRST: &[u8] = b"GC assist marking";
    let mut targets = Vec::new();
    for s in elf
        .sections
        .iter()
        .filter(|s| s.alloc && !s.write && !s.exec)
    {
        let Some(data) = elf.section_data(s) else {
            continue;
        };
        let mut from = 0;
        while let Some(p) = find(&data[from..], FIRST) {
            targets.push(s.addr.wrapping_add((from + p) as u64));
            from += p + 1;
            if targets.len() > 16 {
                break;
            }
        }
    }
    for s in elf.sections.iter().filter(|s| s.alloc && s.write) {
        let Some(data) = elf.section_data(s) else {
            continue;
        };
        for off in (16..data.len().saturating_sub(15)).step_by(8) {
            let word = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
            let (ptr, len) = (word(off), word(off + 8));
            if len == FIRST.len() as u64 && targets.contains(&ptr) {
                let t = read_table(elf, s.addr.wrapping_add(off as u64 - 16), MAX_REASONS);
                if plausible(&t) {
                    return Ok((t, "found by its contents (stripped binary)"));
                }
            }
        }
    }
    Err("runtime.waitReasonStrings not found: wait reasons are shown as numbers".into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
