//! The few things the Go reader needs from an ELF file: sections, a handful of symbols, bytes
//! at a virtual address, and the load bias of a PIE.

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags};

use super::error::GoError;

/// One section, by its unrelocated virtual address.
#[derive(Clone, Debug)]
pub(crate) struct Section {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    /// File range of the contents; None for NOBITS (.bss) and non-allocated sections.
    pub file: Option<(usize, usize)>,
    pub alloc: bool,
    pub write: bool,
    pub exec: bool,
}

/// The symbols the reader looks for (absent in stripped binaries).
pub(crate) const WANTED_SYMBOLS: &[&str] = &[
    "runtime.allglen",
    "runtime.allgptr",
    "runtime.allgs",
    "runtime.waitReasonStrings",
    "runtime.firstmoduledata",
    "runtime.pclntab",
    "runtime.epclntab",
];

pub(crate) struct Elf<'a> {
    pub data: &'a [u8],
    pub sections: Vec<Section>,
    /// (name, address, size) of the wanted symbols that are present.
    pub symbols: Vec<(String, u64, u64)>,
    pub is_dyn: bool,
}

const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, GoError> {
        let file = object::File::parse(data).map_err(|e| GoError::NotElf(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(GoError::NotElf(format!("{:?} file", file.format())));
        }
        if file.architecture() != object::Architecture::X86_64 || !file.is_little_endian() {
            return Err(GoError::UnsupportedArch(format!(
                "{:?}",
                file.architecture()
            )));
        }
        let mut sections = Vec::new();
        for s in file.sections() {
            let flags = match s.flags() {
                SectionFlags::Elf { sh_flags } => sh_flags,
                _ => 0,
            };
            let nobits = matches!(s.kind(), object::SectionKind::UninitializedData)
                || matches!(s.kind(), object::SectionKind::UninitializedTls);
            let file_range = if nobits {
                None
            } else {
                s.file_range().and_then(|(off, len)| {
                    let off = usize::try_from(off).ok()?;
                    let len = usize::try_from(len).ok()?;
                    let end = off.checked_add(len)?;
                    (end <= data.len()).then_some((off, len))
                })
            };
            sections.push(Section {
                name: s.name().unwrap_or("").to_string(),
                addr: s.address(),
                size: s.size(),
                file: file_range,
                alloc: flags & SHF_ALLOC != 0,
                write: flags & SHF_WRITE != 0,
                exec: flags & SHF_EXECINSTR != 0,
            });
        }
        let mut symbols = Vec::new();
        for sym in file.symbols() {
            if let Ok(name) = sym.name()
                && WANTED_SYMBOLS.contains(&name)
            {
                symbols.push((name.to_string(), sym.address(), sym.size()));
            }
        }
        let is_dyn = file.kind() == object::ObjectKind::Dynamic;
        Ok(Elf {
            data,
            sections,
            symbols,
            is_dyn,
        })
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn symbol(&self, name: &str) -> Option<(u64, u64)> {
        self.symbols
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, a, s)| (*a, *s))
    }

    /// The file bytes of a section.
    pub fn section_data(&self, s: &Section) -> Option<&'a [u8]> {
        let (off, len) = s.file?;
        self.data.get(off..off.checked_add(len)?)
    }

    /// The allocated section holding `addr` (by address, file-backed or not).
    pub fn section_at(&self, addr: u64) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.alloc && addr >= s.addr && s.size > 0 && addr - s.addr < s.size)
    }

    /// `len` file bytes at virtual address `addr`, when they lie in one file-backed section.
    pub fn bytes_at(&self, addr: u64, len: usize) -> Option<&'a [u8]> {
        let s = self.section_at(addr)?;
        let data = self.section_data(s)?;
        let off = usize::try_from(addr - s.addr).ok()?;
        data.get(off..off.checked_add(len)?)
    }

    pub fn u64_at(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes_at(addr, 8)?.try_into().ok()?))
    }

    /// Writable allocated sections (.data, .bss, .noptrdata, .noptrbss, .go.module, ...):
    /// where runtime variables live.
    pub fn writable_ranges(&self) -> Vec<(u64, u64)> {
        self.sections
            .iter()
            .filter(|s| s.alloc && s.write && s.size > 0)
            .map(|s| (s.addr, s.addr.saturating_add(s.size)))
            .collect()
    }
}

/// The load bias of the binary in a process: what to add to the binary's virtual addresses to
/// get the process's addresses. `maps` is the text of `/proc/PID/maps`, `path` the binary's path
/// as it appears there (the target of `/proc/PID/exe`). 0 for a non-PIE executable.
pub fn load_bias(elf: &[u8], maps: &str, path: &str) -> Result<u64, GoError> {
    let file = object::File::parse(elf).map_err(|e| GoError::NotElf(e.to_string()))?;
    if file.kind() != object::ObjectKind::Dynamic {
        return Ok(0);
    }
    let object::File::Elf64(ref f) = file else {
        return Err(GoError::UnsupportedArch("not a 64-bit ELF".into()));
    };
    use object::read::elf::ProgramHeader;
    let endian = f.endian();
    let loads: Vec<(u64, u64, u64)> = f
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
        .map(|p| (p.p_vaddr(endian), p.p_offset(endian), p.p_filesz(endian)))
        .collect();
    let want = path.trim_end_matches(" (deleted)");
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let name: Vec<&str> = parts.skip(2).collect();
        let name = name.join(" ");
        if name.trim_end_matches(" (deleted)") != want {
            continue;
        }
        let Some((start, _)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(off)) = (u64::from_str_radix(start, 16), u64::from_str_radix(off, 16))
        else {
            continue;
        };
        for &(vaddr, poff, filesz) in &loads {
            if off >= poff && off - poff < filesz.max(1) {
                // base = map_start - (p_vaddr + (map_off - p_offset))
                let seg_addr = vaddr.wrapping_add(off - poff);
                return Ok(start.wrapping_sub(seg_addr));
            }
        }
    }
    Err(GoError::Memory(format!(
        "no mapping of {want} in the process's maps (cannot compute the load bias)"
    )))
}

/// [`load_bias`] for a live process: reads `/proc/PID/maps` and `/proc/PID/exe`.
pub fn process_load_bias(pid: u32, elf: &[u8]) -> Result<u64, GoError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| GoError::Memory(format!("/proc/{pid}/maps: {e}")))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| GoError::Memory(format!("/proc/{pid}/exe: {e}")))?;
    load_bias(elf, &maps, &exe.to_string_lossy())
}
