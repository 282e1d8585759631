//! `runtime.firstmoduledata`: where the linker records text start, type descriptors and
//! `go:func.*` (the funcdata base). Found by symbol, by the `.go.module` section (Go 1.26+), or
//! by scanning the binary's data for the record that points at the pclntab header.

use super::elf::Elf;

/// The fields the reader needs (unrelocated addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModuleData {
    pub addr: u64,
    pub text: u64,
    pub types: u64,
    pub etypes: u64,
    /// `go:func.*`, the base of funcdata offsets (Go 1.18+).
    pub gofunc: Option<u64>,
}

/// Byte offsets of (types, etypes, gofunc) in moduledata for Go 1.`minor`.
fn offsets(minor: u32) -> (u64, u64, Option<u64>) {
    match minor {
        0..=17 => (280, 288, None),
        18..=19 => (280, 288, Some(304)),
        20..=26 => (296, 304, Some(320)),
        // 1.27 added typedesclen after types, itaboffset/itabsize after etypes.
        _ => (296, 312, Some(344)),
    }
}

const TEXT: u64 = 22 * 8;

/// Find and read moduledata. `pclntab` is the header's address, `funcnametab_off` the
/// funcnametab offset from it (moduledata.funcnametab points there: a second check).
pub(crate) fn find(
    elf: &Elf,
    pclntab: u64,
    funcnametab_off: u64,
    minor: u32,
) -> Option<ModuleData> {
    let read = |addr: u64| -> Option<ModuleData> {
        if elf.u64_at(addr)? != pclntab {
            return None;
        }
        if elf.u64_at(addr.checked_add(8)?)? != pclntab.checked_add(funcnametab_off)? {
            return None;
        }
        let (t, et, gf) = offsets(minor);
        let md = ModuleData {
            addr,
            text: elf.u64_at(addr.checked_add(TEXT)?)?,
            types: elf.u64_at(addr.checked_add(t)?)?,
            etypes: elf.u64_at(addr.checked_add(et)?)?,
            gofunc: match gf {
                Some(o) => Some(elf.u64_at(addr.checked_add(o)?)?),
                None => None,
            },
        };
        let sane = md.types < md.etypes
            && md.etypes - md.types < (1 << 32)
            && md.gofunc.is_none_or(|g| elf.section_at(g).is_some());
        sane.then_some(md)
    };
    if let Some((addr, _)) = elf.symbol("runtime.firstmoduledata")
        && let Some(md) = read(addr)
    {
        return Some(md);
    }
    if let Some(s) = elf.section(".go.module")
        && let Some(md) = read(s.addr)
    {
        return Some(md);
    }
    // Scan the writable, file-backed sections for the pointer to the pclntab header.
    let needle = pclntab.to_le_bytes();
    for s in elf.sections.iter().filter(|s| s.alloc && s.write) {
        let Some(data) = elf.section_data(s) else {
            continue;
        };
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            if chunk == needle
                && let Some(md) = read(s.addr.wrapping_add(8 * i as u64))
            {
                return Some(md);
            }
        }
    }
    None
}
