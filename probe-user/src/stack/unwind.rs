//! DWARF CFI unwinding of a user stack (framehop), from the registers the kernel side recorded
//! and a copy of the top of the stack.
//!
//! Most C, C++ and Rust binaries, and Debian's glibc, have no frame pointers: a frame-pointer
//! walk stops at the first libc frame. framehop reads each module's `.eh_frame` (via
//! `.eh_frame_hdr`) or `.debug_frame` and falls back to frame pointers only where a module has
//! no unwind info (JIT code, some hand-written assembly).

use std::{
    collections::BTreeMap,
    fs::File,
    ops::{Deref, Range},
    sync::Arc,
};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};
use probe_ebpf::UserRegs;

use crate::procfs::{self, Mapping};

/// The bytes of an ELF file: a mapping of the file (stallprobe) or a buffer (tests, fuzzing).
pub type ElfBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A section of an ELF file, handed to framehop without copying. `start..end` was checked
/// against the file's length when the section was made.
#[derive(Clone)]
pub struct SectionData {
    map: ElfBytes,
    start: usize,
    end: usize,
}

impl Deref for SectionData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.map)
            .as_ref()
            .get(self.start..self.end)
            .unwrap_or(&[])
    }
}

/// A PT_LOAD program header, as far as mapping addresses goes.
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    filesz: u64,
    vaddr: u64,
    exec: bool,
}

/// The stated virtual address (SVMA) of the first byte of a mapping of the file at
/// `map_offset`: `p_vaddr + (map_offset - p_offset)` for the segment the mapping shows.
/// Segments need not start on a page boundary (lld puts .text at p_offset 0x16440, mapped from
/// offset 0x16000), so match page-aligned, and prefer executable segments.
fn svma_of_mapping(segments: &[Segment], map_offset: u64) -> Option<u64> {
    let seg = segments
        .iter()
        .filter(|s| {
            s.offset & !0xfff <= map_offset && map_offset < s.offset.saturating_add(s.filesz.max(1))
        })
        .max_by_key(|s| (s.exec, s.offset))?;
    // p_vaddr + map_offset - p_offset, without overflow (the numbers come from the file).
    u64::try_from(i128::from(seg.vaddr) + i128::from(map_offset) - i128::from(seg.offset)).ok()
}

fn segment_is_exec(s: &object::Segment<'_, '_>) -> bool {
    matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
}

/// One address of an unwound stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The instruction pointer (first frame) or a return address.
    pub addr: u64,
    /// The address to look up: `addr` for the first frame, `addr - 1` for return addresses (so
    /// it falls inside the call instruction, not on the next line).
    pub lookup: u64,
}

/// Unwinding state for one process: its modules' unwind tables, loaded once per mapping.
pub struct ProcessUnwinder {
    pid: u32,
    unwinder: UnwinderX86_64<SectionData>,
    cache: CacheX86_64,
    /// start → end of every mapping we made (or tried to make) a module for.
    modules: BTreeMap<u64, u64>,
    maps: Vec<Mapping>,
    /// Mappings whose file could not be opened or parsed (reported as "unknown" frames).
    pub failed: Vec<String>,
    /// Bumped whenever the mappings change (exec'd loader mapping libc, dlopen, JIT).
    pub maps_version: u64,
    /// Instruction pointers found in no mapping even after reading the maps again: they do
    /// not make every unwind re-read /proc/PID/maps (until the maps change). Bounded.
    unmapped: std::collections::HashSet<u64>,
}

const MAX_UNMAPPED: usize = 1024;

/// Upper bound on frames per stack (deep recursion stays bounded).
pub const MAX_FRAMES: usize = 128;

impl ProcessUnwinder {
    pub fn new(pid: u32) -> ProcessUnwinder {
        let mut u = ProcessUnwinder {
            pid,
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            modules: BTreeMap::new(),
            maps: Vec::new(),
            failed: Vec::new(),
            maps_version: 0,
            unmapped: Default::default(),
        };
        u.refresh();
        u
    }

    /// Re-read /proc/PID/maps and add modules for new executable mappings (dlopen, JIT, exec).
    pub fn refresh(&mut self) {
        let Some(maps) = procfs::read_maps(self.pid) else {
            return;
        };
        if maps != self.maps {
            self.maps_version += 1;
            self.unmapped.clear();
        }
        for m in maps.iter().filter(|m| m.is_exec() && m.is_file()) {
            if self.modules.get(&m.start) == Some(&m.end) {
                continue;
            }
            self.modules.insert(m.start, m.end);
            match self.module_for(m) {
                Some(module) => self.unwinder.add_module(module),
                None => self.failed.push(m.path.clone()),
            }
        }
        self.maps = maps;
    }

    /// The mapping that contains `addr`.
    pub fn mapping_of(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.contains(addr))
    }

    fn open(&self, m: &Mapping) -> Option<File> {
        // map_files is the kernel's own link to the mapped file: deleted binaries and other
        // mount namespaces work, and the target cannot redirect it (needs
        // CAP_CHECKPOINT_RESTORE). The fallback, the path as the target names it, is resolved
        // inside the target's root, never outside it.
        let via_map_files = format!("/proc/{}/map_files/{:x}-{:x}", self.pid, m.start, m.end);
        File::open(via_map_files).ok().or_else(|| {
            let path = m.path.trim_end_matches(" (deleted)");
            crate::target_fs::open_in_root(
                self.pid,
                std::path::Path::new(path),
                u64::MAX,
                crate::target_fs::Symlinks::Follow,
            )
            .ok()
        })
    }

    fn module_for(&self, m: &Mapping) -> Option<Module<SectionData>> {
        let file = self.open(m)?;
        // SAFETY: the mapping is read-only and private; a concurrent truncation of the file could
        // SIGBUS us, which is the accepted risk of every unwinder/symbolizer that maps binaries.
        let map: ElfBytes = Arc::new(unsafe { Mmap::map(&file) }.ok()?);
        module_from_elf(map, m.path.clone(), m.start..m.end, m.offset)
    }

    /// Unwind from `regs` using `stack`, a copy of memory starting at `regs.sp`.
    pub fn unwind(&mut self, regs: UserRegs, stack: &[u8]) -> Vec<RawFrame> {
        if regs.ip == 0 {
            return Vec::new();
        }
        if self.mapping_of(regs.ip).is_none() && !self.unmapped.contains(&regs.ip) {
            self.refresh();
            if self.mapping_of(regs.ip).is_none() && self.unmapped.len() < MAX_UNMAPPED {
                self.unmapped.insert(regs.ip);
            }
        }
        unwind_stack(&self.unwinder, &mut self.cache, regs, stack)
    }
}

/// Walk a stack with `unwinder`'s modules, from `regs` and `stack` (a copy of memory starting
/// at `regs.sp`), at most [`MAX_FRAMES`] frames.
pub fn unwind_stack(
    unwinder: &UnwinderX86_64<SectionData>,
    cache: &mut CacheX86_64,
    regs: UserRegs,
    stack: &[u8],
) -> Vec<RawFrame> {
    if regs.ip == 0 {
        return Vec::new();
    }
    let sp = regs.sp;
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
        let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    };
    let mut out = Vec::new();
    let mut it = unwinder.iter_frames(
        regs.ip,
        UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
        cache,
        &mut read_stack,
    );
    while out.len() < MAX_FRAMES {
        match it.next() {
            Ok(Some(FrameAddress::InstructionPointer(a))) => {
                out.push(RawFrame { addr: a, lookup: a })
            }
            Ok(Some(FrameAddress::ReturnAddress(a))) => {
                let a = a.get();
                out.push(RawFrame {
                    addr: a,
                    lookup: a - 1,
                })
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// framehop's module for the mapping `avma` (file offset `map_offset`) of the ELF file `bytes`:
/// its `.eh_frame` (with `.eh_frame_hdr` when that is consistent) or `.debug_frame`. `None` when
/// the bytes are not ELF or no segment holds the mapping.
///
/// Everything here comes from the target's file: a section whose file range runs past the end
/// of the file, or whose address range overflows, is left out; an `.eh_frame_hdr` whose
/// `eh_frame_ptr` is not `.eh_frame`'s address, or whose search table is unsorted or points
/// outside `.eh_frame`, is left out too, and framehop indexes `.eh_frame` itself instead.
pub fn module_from_elf(
    bytes: ElfBytes,
    name: String,
    avma: Range<u64>,
    map_offset: u64,
) -> Option<Module<SectionData>> {
    let data: &[u8] = (*bytes).as_ref();
    let obj = object::File::parse(data).ok()?;
    if obj.format() != object::BinaryFormat::Elf {
        return None;
    }
    let segments: Vec<Segment> = obj
        .segments()
        .map(|s| Segment {
            offset: s.file_range().0,
            filesz: s.file_range().1,
            vaddr: s.address(),
            exec: segment_is_exec(&s),
        })
        .collect();
    let base_avma = avma
        .start
        .checked_sub(svma_of_mapping(&segments, map_offset)?)?;

    let section = |name: &str| -> Option<(Range<u64>, SectionData)> {
        let s = obj.section_by_name(name)?;
        let cfr = s.compressed_file_range().ok()?;
        if cfr.format != object::CompressionFormat::None {
            return None; // compressed .debug_frame: rare, skipped
        }
        let (off, size) = s.file_range()?;
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        if end > data.len() {
            return None;
        }
        Some((
            s.address()..s.address().checked_add(s.size())?,
            SectionData {
                map: bytes.clone(),
                start,
                end,
            },
        ))
    };
    let text = section(".text");
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr").filter(|(svma, hdr)| {
        eh_frame
            .as_ref()
            .is_some_and(|(eh_svma, _)| eh_frame_hdr_ok(hdr, svma.start, eh_svma))
    });
    let got = section(".got");
    let debug_frame = section(".debug_frame");
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text.as_ref().map(|t| t.0.clone()),
        text: text.map(|t| t.1),
        got_svma: got.map(|g| g.0),
        eh_frame_svma: eh_frame.as_ref().map(|e| e.0.clone()),
        eh_frame: eh_frame.map(|e| e.1),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|e| e.0.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|e| e.1),
        debug_frame: debug_frame.map(|d| d.1),
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    Some(Module::new(name, avma, base_avma, info))
}

/// `DW_EH_PE_*` pointer encodings, as far as `.eh_frame_hdr` uses them.
const DW_EH_PE_OMIT: u8 = 0xff;
const DW_EH_PE_DATAREL_SDATA4: u8 = 0x3b;

/// One encoded pointer of `.eh_frame_hdr` at `*pos` (`pos_svma` is its address); `data_base` is
/// the header's own address. Formats absptr/udata/sdata 2, 4, 8 with no, pc- or data-relative
/// application; anything else (indirect, aligned, function-relative) is `None`.
fn read_encoded(b: &[u8], pos: &mut usize, enc: u8, pos_svma: u64, data_base: u64) -> Option<u64> {
    let at = |n: usize| b.get(*pos..pos.checked_add(n)?);
    let (value, n): (i128, usize) = match enc & 0x0f {
        0x00 | 0x04 => (u64::from_le_bytes(at(8)?.try_into().ok()?).into(), 8),
        0x02 => (u16::from_le_bytes(at(2)?.try_into().ok()?).into(), 2),
        0x03 => (u32::from_le_bytes(at(4)?.try_into().ok()?).into(), 4),
        0x0a => (i16::from_le_bytes(at(2)?.try_into().ok()?).into(), 2),
        0x0b => (i32::from_le_bytes(at(4)?.try_into().ok()?).into(), 4),
        0x0c => (i64::from_le_bytes(at(8)?.try_into().ok()?).into(), 8),
        _ => return None,
    };
    let base = match enc & 0xf0 {
        0x00 => 0,
        0x10 => pos_svma,
        0x30 => data_base,
        _ => return None,
    };
    *pos += n;
    u64::try_from(i128::from(base) + value).ok()
}

/// Most search-table entries checked (a few million FDEs is already a huge binary).
const MAX_EH_FRAME_HDR_ENTRIES: usize = 1 << 24;

/// Whether an `.eh_frame_hdr` at `hdr_svma` can be trusted for lookups into `.eh_frame` at
/// `eh_frame`: version 1, `eh_frame_ptr` is `.eh_frame`'s address, a binary-search table of
/// `datarel|sdata4` pairs that fits in the section, sorted by location, every FDE pointer
/// inside `.eh_frame`. (framehop/gimli would not crash on a bad one, but would look up the
/// wrong FDE or none: the module would lose its unwind info.)
pub fn eh_frame_hdr_ok(hdr: &[u8], hdr_svma: u64, eh_frame: &Range<u64>) -> bool {
    let check = || -> Option<()> {
        let (&[version, ptr_enc, count_enc, table_enc], _) = hdr.split_first_chunk::<4>()?;
        if version != 1 || count_enc == DW_EH_PE_OMIT || table_enc != DW_EH_PE_DATAREL_SDATA4 {
            return None;
        }
        let mut pos = 4;
        let ptr = read_encoded(hdr, &mut pos, ptr_enc, hdr_svma.checked_add(4)?, hdr_svma)?;
        if ptr != eh_frame.start {
            return None;
        }
        let count_svma = hdr_svma.checked_add(pos as u64)?;
        let count = read_encoded(hdr, &mut pos, count_enc, count_svma, hdr_svma)?;
        let count = usize::try_from(count).ok()?;
        let table = hdr.get(pos..)?;
        if count == 0 || count > MAX_EH_FRAME_HDR_ENTRIES || count.checked_mul(8)? > table.len() {
            return None;
        }
        let mut prev = i64::MIN;
        for e in table.chunks_exact(8).take(count) {
            let loc = i64::from(i32::from_le_bytes(e[..4].try_into().ok()?));
            let fde =
                i128::from(hdr_svma) + i128::from(i32::from_le_bytes(e[4..].try_into().ok()?));
            if loc < prev || fde < i128::from(eh_frame.start) || fde >= i128::from(eh_frame.end) {
                return None;
            }
            prev = loc;
        }
        Some(())
    };
    check().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, filesz: u64, vaddr: u64, exec: bool) -> Segment {
        Segment {
            offset,
            filesz,
            vaddr,
            exec,
        }
    }

    #[test]
    fn lld_layout_with_unaligned_text_segment() {
        // readelf -l of a Rust (lld) binary: the r-x mapping starts at file offset 0x16000.
        let segs = [
            seg(0, 0x16438, 0, false),
            seg(0x16440, 0x434a0, 0x17440, true),
            seg(0x598e0, 0x2e08, 0x5b8e0, false),
        ];
        assert_eq!(svma_of_mapping(&segs, 0x16000), Some(0x17000));
    }

    #[test]
    fn gnu_ld_layout() {
        let segs = [
            seg(0, 0x6c0, 0, false),
            seg(0x1000, 0x2b5, 0x1000, true),
            seg(0x2000, 0x1a4, 0x2000, false),
        ];
        assert_eq!(svma_of_mapping(&segs, 0x1000), Some(0x1000));
        assert_eq!(svma_of_mapping(&segs, 0x2000), Some(0x2000));
    }

    #[test]
    fn no_segment() {
        assert_eq!(svma_of_mapping(&[seg(0, 0x100, 0, true)], 0x5000), None);
    }

    #[test]
    fn segment_numbers_near_the_top_do_not_overflow() {
        let segs = [seg(u64::MAX - 0x10, u64::MAX, u64::MAX, true)];
        assert_eq!(svma_of_mapping(&segs, u64::MAX - 0x8), None);
        let segs = [seg(0x1000, 0x100, u64::MAX - 0x10, true)];
        assert_eq!(svma_of_mapping(&segs, 0x1000), Some(u64::MAX - 0x10));
        assert_eq!(svma_of_mapping(&segs, 0x10ff), None);
    }

    /// This test binary's `.eh_frame_hdr` and `.eh_frame`: (header bytes, header address,
    /// `.eh_frame`'s address range).
    fn own_eh_frame_hdr() -> (Vec<u8>, u64, Range<u64>) {
        use object::{Object, ObjectSection};
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let obj = object::File::parse(&data[..]).unwrap();
        let hdr = obj.section_by_name(".eh_frame_hdr").unwrap();
        let eh = obj.section_by_name(".eh_frame").unwrap();
        (
            hdr.data().unwrap().to_vec(),
            hdr.address(),
            eh.address()..eh.address() + eh.size(),
        )
    }

    #[test]
    fn a_consistent_eh_frame_hdr_is_used() {
        let (hdr, at, eh) = own_eh_frame_hdr();
        assert!(eh_frame_hdr_ok(&hdr, at, &eh));
    }

    #[test]
    fn an_out_of_range_eh_frame_hdr_is_not_used() {
        let (hdr, at, eh) = own_eh_frame_hdr();
        assert_eq!(hdr[3], DW_EH_PE_DATAREL_SDATA4, "usual table encoding");
        let patched = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut h = hdr.clone();
            f(&mut h);
            eh_frame_hdr_ok(&h, at, &eh)
        };
        // eh_frame_ptr 1 GiB away (what tests/reliability.rs does to a real binary).
        assert!(!patched(
            &|h| h[4..8].copy_from_slice(&0x4000_0000i32.to_le_bytes())
        ));
        // An FDE pointer before .eh_frame, and one past it.
        assert!(!patched(
            &|h| h[16..20].copy_from_slice(&i32::MIN.to_le_bytes())
        ));
        assert!(!patched(
            &|h| h[16..20].copy_from_slice(&i32::MAX.to_le_bytes())
        ));
        // A count larger than the table, or than any binary has; a table out of order.
        assert!(!patched(
            &|h| h[8..12].copy_from_slice(&u32::MAX.to_le_bytes())
        ));
        assert!(!patched(&|h| h.truncate(h.len() - 8)));
        assert!(!patched(
            &|h| h[12..16].copy_from_slice(&i32::MAX.to_le_bytes())
        ));
        // Version and encodings it does not know; nothing at all.
        assert!(!patched(&|h| h[0] = 2));
        assert!(!patched(&|h| h[1] = 0x80));
        assert!(!eh_frame_hdr_ok(&[], at, &eh));
        assert!(!eh_frame_hdr_ok(&hdr, u64::MAX - 2, &eh));
    }

    #[test]
    fn module_from_elf_takes_what_the_file_holds_and_nothing_else() {
        let exe: ElfBytes = Arc::new(std::fs::read(std::env::current_exe().unwrap()).unwrap());
        // This binary mapped at some address: a module. Garbage and a truncated copy: none
        // or one without the sections past the end, never a panic.
        let at = 0x5555_0000_0000..0x5555_1000_0000;
        assert!(module_from_elf(exe.clone(), "self".into(), at.clone(), 0).is_some());
        let garbage: ElfBytes = Arc::new(vec![0x7fu8; 4096]);
        assert!(module_from_elf(garbage, "garbage".into(), at.clone(), 0).is_none());
        let short: ElfBytes = Arc::new((*exe).as_ref()[..8192].to_vec());
        let _ = module_from_elf(short, "short".into(), at, 0);
    }
}
