//! A Go executable, parsed once: version, pclntab, moduledata, where the goroutine list and
//! the wait reasons are, and the runtime structs' layout.

use std::sync::Arc;

use super::{
    GoFrame,
    buildinfo::{self, GoVersion},
    dwarf,
    elf::Elf,
    error::GoError,
    layout::{self, Layout},
    moduledata::{self, ModuleData},
    pclntab::{self, Pclntab},
    symbols::{self, AllgSyms},
    types::{TypeDescStructs, TypeReader},
};

/// Oldest Go release supported.
pub const MIN_MINOR: u32 = 17;
/// Largest pclntab copied, and largest section kept for the inline trees (bytes each; both are
/// slices of the file, so never more than it).
const MAX_PCLNTAB: usize = 512 << 20;

/// A parsed Go executable (one per process image).
pub struct GoBinary {
    version: GoVersion,
    pub(crate) pcln: Pclntab,
    pub(crate) md: Option<ModuleData>,
    /// Static bytes kept for the inline trees (the section holding go:func.*).
    statics: Vec<(u64, Vec<u8>)>,
    pub(crate) allg: Result<AllgSyms, GoError>,
    /// The target's `runtime.waitReasonStrings` (empty when not found).
    pub(crate) wait_reasons: Vec<String>,
    pub(crate) layout: Result<Layout, GoError>,
    /// (entry, end) of the functions where a stack walk stops.
    pub(crate) stop_funcs: std::collections::HashMap<&'static str, (u64, u64)>,
    notes: Vec<String>,
    pie: bool,
}

/// The pclntab header's address and the bytes from there to the end of its section.
fn locate_pclntab<'e>(elf: &Elf<'e>) -> Result<(u64, &'e [u8]), GoError> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.section(name)
            && let Some(d) = elf.section_data(s)
            && pclntab::looks_like_header(d)
        {
            return Ok((s.addr, d));
        }
    }
    if let Some((addr, _)) = elf.symbol("runtime.pclntab")
        && let Some(s) = elf.section_at(addr)
        && let Some(d) = elf.section_data(s)
        && let Some(d) = d.get(usize::try_from(addr - s.addr).unwrap_or(usize::MAX)..)
        && pclntab::looks_like_header(d)
    {
        return Ok((addr, d));
    }
    // By its header, in the read-only data.
    for s in elf.sections.iter().filter(|s| s.alloc && !s.exec) {
        let Some(d) = elf.section_data(s) else {
            continue;
        };
        let mut off = 0;
        while off + 64 <= d.len() {
            if pclntab::looks_like_header(&d[off..])
                && pclntab::magic_format(u32::from_le_bytes([
                    d[off],
                    d[off + 1],
                    d[off + 2],
                    d[off + 3],
                ]))
                .is_ok()
            {
                return Ok((s.addr.wrapping_add(off as u64), &d[off..]));
            }
            off += 4;
        }
    }
    Err(GoError::NoPclntab(
        "no .gopclntab section, no runtime.pclntab symbol, no header found in the data".into(),
    ))
}

impl GoBinary {
    /// Parse a Go executable (the bytes of `/proc/PID/exe`).
    pub fn parse(data: &[u8]) -> Result<GoBinary, GoError> {
        let elf = Elf::parse(data)?;
        let text = buildinfo::read_version(&elf)?;
        let version = GoVersion::parse(&text)?;
        if version.minor < MIN_MINOR {
            return Err(GoError::TooOld(text.trim_start_matches("go").to_string()));
        }
        let mut notes = Vec::new();
        let (pc_addr, pc_bytes) = locate_pclntab(&elf)?;
        let format = pclntab::magic_format(u32::from_le_bytes(
            pc_bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        ))?;
        let word = |i: usize| {
            pc_bytes
                .get(8 + 8 * i..16 + 8 * i)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let funcname_off = if format == pclntab::Format::V116 {
            word(2)
        } else {
            word(3)
        }
        .ok_or_else(|| GoError::NoPclntab("truncated header".into()))?;
        let md = moduledata::find(&elf, pc_addr, funcname_off, version.minor);
        if md.is_none() {
            notes.push("runtime.firstmoduledata not found: no inlined frames".into());
        }
        let pc_copy = pc_bytes[..pc_bytes.len().min(MAX_PCLNTAB)].to_vec();
        let pcln = Pclntab::parse(pc_copy, md.map(|m| m.text))?;

        let mut statics = Vec::new();
        let keep = match (pcln.format, md.and_then(|m| m.gofunc)) {
            (pclntab::Format::V116, _) => elf.section(".rodata").map(|s| s.addr),
            (_, Some(g)) => Some(g),
            _ => None,
        };
        if let Some(a) = keep
            && let Some(s) = elf.section_at(a)
            && let Some(d) = elf.section_data(s)
            && d.len() <= MAX_PCLNTAB
        {
            statics.push((s.addr, d.to_vec()));
        }

        let allg = symbols::find_allg(&elf, &pcln);
        let wait_reasons = match symbols::wait_reasons(&elf) {
            Ok((t, _how)) => t,
            Err(why) => {
                notes.push(why);
                Vec::new()
            }
        };
        let layout = match dwarf::DwarfStructs::load(&elf, &mut notes) {
            Some(d) => layout::build(&d).or_else(|dwarf_err| {
                notes.push(format!(
                    "DWARF layout unusable ({dwarf_err}); using type descriptors"
                ));
                type_layout(&elf, md, version.minor)
            }),
            None => type_layout(&elf, md, version.minor),
        }
        .map_err(GoError::NoLayout);
        if let Ok(l) = &layout {
            notes.extend(l.notes.iter().cloned());
        }
        let stop_funcs = pcln
            .funcs_named(&[
                "runtime.goexit",
                "runtime.mstart",
                "runtime.mstart0",
                "runtime.rt0_go",
            ])
            .into_iter()
            .map(|(n, f)| (n, (f.entry, f.end)))
            .collect();
        Ok(GoBinary {
            stop_funcs,
            version,
            pcln,
            md,
            statics,
            allg,
            wait_reasons,
            layout,
            notes,
            pie: elf.is_dyn,
        })
    }

    /// "go1.23.9", as the binary records it.
    pub fn version(&self) -> &str {
        &self.version.text
    }

    pub fn go_version(&self) -> &GoVersion {
        &self.version
    }

    /// Position-independent (needs a load bias).
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// What was found how, and what degraded (for the report's notes).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Where `runtime.g` offsets came from ("DWARF" / "runtime type descriptors"), or why
    /// there are none.
    pub fn layout_source(&self) -> Result<&'static str, GoError> {
        self.layout.as_ref().map(|l| l.source).map_err(Clone::clone)
    }

    fn read_static(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.statics.iter().find_map(|(a, d)| {
            let off = usize::try_from(addr.checked_sub(*a)?).ok()?;
            d.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
        })
    }

    /// Frames at `pc` (unrelocated), innermost first with inlined calls expanded. `pc` is
    /// looked up as is: for a return address pass `ret - 1`.
    pub fn symbolize(&self, pc: u64) -> Vec<GoFrame> {
        self.symbolize_as(pc, pc)
    }

    /// Frames looked up at `lookup` and reported with `pc`.
    pub(crate) fn symbolize_as(&self, lookup: u64, pc: u64) -> Vec<GoFrame> {
        let read = |a: u64, l: usize| self.read_static(a, l);
        self.pcln
            .frames(lookup, self.md.and_then(|m| m.gofunc), &read)
            .into_iter()
            .map(|f| GoFrame {
                pc,
                function: Arc::from(f.function),
                file: Arc::from(f.file),
                line: f.line,
                inlined: f.inlined,
            })
            .collect()
    }

    /// The name of the function containing `pc` (unrelocated; not inline-expanded).
    pub fn function_at(&self, pc: u64) -> Option<&str> {
        let f = self.pcln.find_func(pc)?;
        self.pcln.func_name(&f)
    }
}

fn type_layout(elf: &Elf, md: Option<ModuleData>, minor: u32) -> Result<Layout, String> {
    let md = md.ok_or("no DWARF, and moduledata (the type descriptors' range) was not found")?;
    layout::build(&TypeDescStructs(TypeReader::new(elf, md, minor)))
}

/// Test aid: the `runtime.g`/`m`/`sudog`/`hchan` offsets from DWARF and from the type
/// descriptors, when the binary has both (None without DWARF). Each as `Debug` text.
#[doc(hidden)]
pub fn layout_from_both(data: &[u8]) -> Result<Option<(String, String)>, GoError> {
    let elf = Elf::parse(data)?;
    let version = GoVersion::parse(&buildinfo::read_version(&elf)?)?;
    let (pc_addr, pc_bytes) = locate_pclntab(&elf)?;
    let word = |i: usize| {
        pc_bytes
            .get(8 + 8 * i..16 + 8 * i)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let fmt_is_116 = pc_bytes.first() == Some(&0xfa);
    let fno = if fmt_is_116 { word(2) } else { word(3) }.unwrap_or(0);
    let md = moduledata::find(&elf, pc_addr, fno, version.minor);
    let Some(d) = dwarf::DwarfStructs::load(&elf, &mut Vec::new()) else {
        return Ok(None);
    };
    let strip = |mut l: Layout| {
        l.source = "";
        format!("{:?} {:?} {:?}", l.g, l.m_procid, l.chan)
    };
    let a = layout::build(&d).map_err(GoError::NoLayout)?;
    let b = type_layout(&elf, md, version.minor).map_err(GoError::NoLayout)?;
    Ok(Some((strip(a), strip(b))))
}
