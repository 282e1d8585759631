//! Go's pc-line table (`.gopclntab`, "pcHeader"): functions, files and lines by pc, frame sizes,
//! and the inline tree. Formats: magic 0xfffffffa (Go 1.16/1.17), 0xfffffff0 (1.18/1.19),
//! 0xfffffff1 (1.20+; from 1.26 the header's text start is 0 and comes from moduledata).
//! 0xfffffffb (1.2–1.15) is recognised and refused (older than supported).
//! Everything is read with checked offsets: a corrupt table gives `None`, never a panic.

use super::error::GoError;

/// Most inlined frames expanded at one pc.
const MAX_INLINE_DEPTH: usize = 64;
/// Most steps through one pc-value table.
const MAX_PCVALUE_STEPS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// 0xfffffffa: absolute entry pcs, funcdata as pointers.
    V116,
    /// 0xfffffff0: 32-bit entry offsets from text start, funcdata as offsets from gofunc.
    V118,
    /// 0xfffffff1: as V118 plus startLine in _func; 16-byte inline tree entries.
    V120,
}

/// The table, copied out of the binary.
pub(crate) struct Pclntab {
    pub format: Format,
    data: Vec<u8>,
    nfunc: usize,
    /// Text start (unrelocated); from the header, or moduledata when the header has 0.
    pub text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

/// A function record in the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Func {
    /// Offset of the _func record in `data`.
    off: usize,
    pub entry: u64,
    /// Entry of the next function (end of this one's code).
    pub end: u64,
    pub name_off: i32,
}

/// One (possibly inlined) frame at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SymFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub inlined: bool,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The magic number's format, if it is a pclntab header we know.
pub(crate) fn magic_format(magic: u32) -> Result<Format, GoError> {
    match magic {
        0xffff_fffa => Ok(Format::V116),
        0xffff_fff0 => Ok(Format::V118),
        0xffff_fff1 => Ok(Format::V120),
        0xffff_fffb => Err(GoError::TooOld(
            "1.2–1.15 (pclntab magic 0xfffffffb)".into(),
        )),
        m => Err(GoError::NoPclntab(format!("unknown magic {m:#x}"))),
    }
}

/// Whether `b` starts like a pclntab header for x86-64 (quantum 1, 8-byte pointers).
pub(crate) fn looks_like_header(b: &[u8]) -> bool {
    b.len() >= 8
        && b[1..4] == [0xff, 0xff, 0xff]
        && b[4..8] == [0, 0, 1, 8]
        && matches!(b[0], 0xfa | 0xf0 | 0xf1 | 0xfb)
}

impl Pclntab {
    /// Parse the table whose header is at the start of `data`.
    /// `text_start` is used when the header has none (Go 1.26+).
    pub fn parse(data: Vec<u8>, text_start: Option<u64>) -> Result<Pclntab, GoError> {
        let bad = |why: &str| GoError::NoPclntab(why.to_string());
        let magic = u32_at(&data, 0).ok_or_else(|| bad("truncated header"))?;
        let format = magic_format(magic)?;
        if data.get(4..8) != Some(&[0, 0, 1, 8][..]) {
            return Err(bad("header is not for x86-64 (quantum 1, 8-byte pointers)"));
        }
        let word = |i: usize| u64_at(&data, 8 + 8 * i).ok_or_else(|| bad("truncated header"));
        let nfunc = word(0)?;
        // words: nfunc, nfiles, [textStart], funcname, cu, filetab, pctab, pcln
        let base = if format == Format::V116 { 2 } else { 3 };
        let header_text = if format == Format::V116 { 0 } else { word(2)? };
        let offs: Vec<u64> = (0..5).map(|i| word(base + i)).collect::<Result<_, _>>()?;
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| bad("offset too large"));
        let (funcnametab, cutab, filetab, pctab, functab) = (
            to_usize(offs[0])?,
            to_usize(offs[1])?,
            to_usize(offs[2])?,
            to_usize(offs[3])?,
            to_usize(offs[4])?,
        );
        if !(funcnametab <= cutab && cutab <= filetab && filetab <= pctab && pctab <= functab)
            || functab > data.len()
        {
            return Err(bad("table offsets out of order or past the end"));
        }
        let nfunc = to_usize(nfunc)?;
        let entry_size = if format == Format::V116 { 16 } else { 8 };
        let need = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(entry_size))
            .and_then(|n| n.checked_add(functab))
            .ok_or_else(|| bad("function count overflows"))?;
        if nfunc == 0 || need > data.len() {
            return Err(bad("function table past the end"));
        }
        let text_start = match format {
            Format::V116 => 0,
            _ if header_text != 0 => header_text,
            _ => text_start.ok_or_else(|| {
                bad("the header has no text start (Go 1.26+) and moduledata was not found")
            })?,
        };
        Ok(Pclntab {
            format,
            data,
            nfunc,
            text_start,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
        })
    }

    /// Entry pc and _func offset of function-table slot `i` (0..=nfunc).
    fn slot(&self, i: usize) -> Option<(u64, usize)> {
        match self.format {
            Format::V116 => {
                let at = self.functab.checked_add(i.checked_mul(16)?)?;
                let pc = u64_at(&self.data, at)?;
                let off = u64_at(&self.data, at + 8)?;
                Some((pc, usize::try_from(off).ok()?))
            }
            _ => {
                let at = self.functab.checked_add(i.checked_mul(8)?)?;
                let pc = u32_at(&self.data, at)?;
                let off = u32_at(&self.data, at + 4)?;
                Some((self.text_start.checked_add(u64::from(pc))?, off as usize))
            }
        }
    }

    /// Text range covered by the table: [first entry, end of the last function).
    pub fn text_range(&self) -> Option<(u64, u64)> {
        Some((self.slot(0)?.0, self.slot(self.nfunc)?.0))
    }

    /// The function record of slot `i`.
    pub fn func_at_index(&self, i: usize) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        let (entry, off) = self.slot(i)?;
        let (end, _) = self.slot(i + 1)?;
        let off = self.functab.checked_add(off)?;
        let name_at = if self.format == Format::V116 { 8 } else { 4 };
        let name_off = u32_at(&self.data, off.checked_add(name_at)?)? as i32;
        Some(Func {
            off,
            entry,
            end,
            name_off,
        })
    }

    /// The function containing `pc` (unrelocated).
    pub fn find_func(&self, pc: u64) -> Option<Func> {
        let (lo_pc, hi_pc) = self.text_range()?;
        if pc < lo_pc || pc >= hi_pc {
            return None;
        }
        // Largest i with slot(i).pc <= pc.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.slot(mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = self.func_at_index(lo)?;
        (f.entry <= pc && pc < f.end).then_some(f)
    }

    /// A NUL-terminated name in funcnametab.
    pub fn name(&self, name_off: i32) -> Option<&str> {
        let start = self
            .funcnametab
            .checked_add(usize::try_from(name_off).ok()?)?;
        if start >= self.cutab {
            return None;
        }
        let rest = self.data.get(start..self.cutab)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    pub fn func_name(&self, f: &Func) -> Option<&str> {
        self.name(f.name_off)
    }

    /// The u32 field of _func at byte `at` (after the entry field).
    fn field(&self, f: &Func, at_116: usize, at_118: usize) -> Option<u32> {
        let at = if self.format == Format::V116 {
            at_116
        } else {
            at_118
        };
        u32_at(&self.data, f.off.checked_add(at)?)
    }

    fn npcdata(&self, f: &Func) -> Option<u32> {
        self.field(f, 32, 28)
    }

    fn header_size(&self) -> usize {
        match self.format {
            Format::V116 => 44,
            Format::V118 => 40,
            Format::V120 => 44,
        }
    }

    /// The value of pc-value table `table` (an offset into pctab) at `pc`.
    fn pcvalue(&self, f: &Func, table: u32, pc: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let mut p = self.pctab.checked_add(table as usize)?;
        let mut cur = f.entry;
        let mut val: i32 = -1;
        for step in 0..MAX_PCVALUE_STEPS {
            let (uv, n) = super::buildinfo::uvarint(self.data.get(p..)?)?;
            if uv == 0 && step > 0 {
                return None;
            }
            p += n;
            let delta = if uv & 1 != 0 {
                !((uv >> 1) as i64)
            } else {
                (uv >> 1) as i64
            };
            val = val.wrapping_add(delta as i32);
            let (pcd, n) = super::buildinfo::uvarint(self.data.get(p..)?)?;
            p += n;
            cur = cur.checked_add(pcd)?; // quantum 1 on x86-64
            if pc < cur {
                return Some(val);
            }
        }
        None
    }

    /// Frame size at `pc` (bytes pushed since entry, return address excluded).
    pub fn spdelta(&self, f: &Func, pc: u64) -> Option<i32> {
        let t = self.field(f, 20, 16)?;
        self.pcvalue(f, t, pc)
    }

    /// File and line of `pc` in `f`'s tables.
    pub fn file_line(&self, f: &Func, pc: u64) -> (String, u32) {
        let file = (|| {
            let pcfile = self.field(f, 24, 20)?;
            let fileno = self.pcvalue(f, pcfile, pc)?;
            let cu = self.field(f, 36, 32)?;
            let idx = (cu as usize).checked_add(usize::try_from(fileno).ok()?)?;
            let at = self.cutab.checked_add(idx.checked_mul(4)?)?;
            if at.checked_add(4)? > self.filetab {
                return None;
            }
            let off = u32_at(&self.data, at)?;
            let start = self.filetab.checked_add(off as usize)?;
            let rest = self.data.get(start..self.pctab)?;
            let end = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        })();
        let line = self
            .field(f, 28, 24)
            .and_then(|t| self.pcvalue(f, t, pc))
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(0);
        (file.unwrap_or_else(|| "?".into()), line)
    }

    /// Value of pcdata table `idx` at `pc`.
    fn pcdata_value(&self, f: &Func, idx: u32, pc: u64) -> Option<i32> {
        if idx >= self.npcdata(f)? {
            return None;
        }
        let at = f
            .off
            .checked_add(self.header_size())?
            .checked_add(idx as usize * 4)?;
        let t = u32_at(&self.data, at)?;
        self.pcvalue(f, t, pc)
    }

    /// Address (unrelocated) of funcdata `idx` of `f`; `gofunc` is moduledata.gofunc (1.18+).
    fn funcdata(&self, f: &Func, idx: u8, gofunc: Option<u64>) -> Option<u64> {
        let nfuncdata = *self.data.get(f.off.checked_add(self.header_size() - 1)?)?;
        if idx >= nfuncdata {
            return None;
        }
        let npcdata = self.npcdata(f)? as usize;
        let pcdata_end = f
            .off
            .checked_add(self.header_size())?
            .checked_add(npcdata.checked_mul(4)?)?;
        match self.format {
            Format::V116 => {
                // Pointers, aligned to 8 from the start of the table.
                let aligned = pcdata_end.checked_add(7)? & !7;
                let p = u64_at(&self.data, aligned.checked_add(idx as usize * 8)?)?;
                (p != 0).then_some(p)
            }
            _ => {
                let off = u32_at(&self.data, pcdata_end.checked_add(idx as usize * 4)?)?;
                if off == u32::MAX {
                    return None;
                }
                gofunc?.checked_add(u64::from(off))
            }
        }
    }

    /// The frames at `pc` (a "call pc": for a return address pass `ret - 1`), innermost first,
    /// inlined calls expanded. `read` gives static bytes of the binary by virtual address (for
    /// the inline tree).
    pub fn frames(
        &self,
        pc: u64,
        gofunc: Option<u64>,
        read: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Vec<SymFrame> {
        let Some(f) = self.find_func(pc) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut pc = pc;
        const PCDATA_INL_TREE_INDEX: u32 = 2;
        const FUNCDATA_INL_TREE: u8 = 3;
        let tree = self.funcdata(&f, FUNCDATA_INL_TREE, gofunc);
        if let Some(tree) = tree {
            let (size, name_at, parent_at) = match self.format {
                Format::V120 => (16u64, 4usize, 8usize),
                _ => (20u64, 12usize, 16usize),
            };
            for _ in 0..MAX_INLINE_DEPTH {
                let Some(ix) = self.pcdata_value(&f, PCDATA_INL_TREE_INDEX, pc) else {
                    break;
                };
                let Ok(ix) = u64::try_from(ix) else {
                    break; // -1: the physical function
                };
                let Some(rec) = ix
                    .checked_mul(size)
                    .and_then(|o| tree.checked_add(o))
                    .and_then(|a| read(a, size as usize))
                else {
                    break;
                };
                let (Some(name_off), Some(parent_pc)) =
                    (u32_at(&rec, name_at), u32_at(&rec, parent_at))
                else {
                    break;
                };
                let (file, line) = self.file_line(&f, pc);
                out.push(SymFrame {
                    function: self.name(name_off as i32).unwrap_or("?").to_string(),
                    file,
                    line,
                    inlined: true,
                });
                let Some(next) = f.entry.checked_add(u64::from(parent_pc)) else {
                    break;
                };
                pc = next;
            }
        }
        let (file, line) = self.file_line(&f, pc);
        out.push(SymFrame {
            function: self.func_name(&f).unwrap_or("?").to_string(),
            file,
            line,
            inlined: false,
        });
        out
    }

    /// Entry and end of the function named `name` (a linear scan: for the few runtime functions
    /// the stripped-binary search needs).
    pub fn func_by_name(&self, name: &str) -> Option<Func> {
        (0..self.nfunc)
            .filter_map(|i| self.func_at_index(i))
            .find(|f| self.func_name(f) == Some(name))
    }

    /// The functions with these names (one pass).
    pub fn funcs_named(&self, names: &[&'static str]) -> Vec<(&'static str, Func)> {
        let mut out = Vec::new();
        for i in 0..self.nfunc {
            let Some(f) = self.func_at_index(i) else {
                continue;
            };
            if let Some(n) = self.func_name(&f)
                && let Some(&want) = names.iter().find(|w| **w == n)
                && !out.iter().any(|(w, _)| *w == want)
            {
                out.push((want, f));
            }
        }
        out
    }
}
