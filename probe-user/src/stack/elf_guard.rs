//! Checking a target's ELF files before blazesym parses them, and a symbol-table-only resolver
//! for the files that fail the check.
//!
//! What blazesym 0.2.7 does with a file it is handed (see `docs/security.md` ("Malformed input")):
//!
//! - a section with `SHF_COMPRESSED` (zlib; `.debug_*` in practice) is inflated into
//!   `Vec::with_capacity(ch_size)`, `ch_size` read from the file, then `read_to_end` with no
//!   limit. A `ch_size` near `u64::MAX` panics ("capacity overflow"); tens of GiB make the
//!   allocation fail, which aborts the process (no unwinding); a small `ch_size` over a stream
//!   that inflates to gigabytes (a "zip bomb") is allocated in full.
//! - besides the module itself it opens, by path, `<module>.dwp`, the `.gnu_debuglink` target
//!   (looked up in `/usr/lib/debug`, `/lib/debug` and next to the module), and the
//!   `.gnu_debugaltlink` / `.debug_sup` target: files a target can place next to its binary.
//!
//! So before blazesym sees a module ([`check_module`]), every compressed section of the module
//! and of each of those files that exists is inflated here into a small buffer (nothing kept)
//! and counted. A module is handed to blazesym only if all of them together inflate to at most
//! [`MAX_INFLATED_PER_MODULE`] and none inflates past its stated size; a link name with a path
//! separator, or a linked "file" that is not a regular file (a device, a FIFO), also fails it.
//! A module that fails is symbolized by [`SymtabResolver`] from its ELF symbol tables alone
//! (function names, no file:line, nothing decompressed), and the report says so.
//!
//! What this does not cover: a target that rewrites a file between this check and blazesym's
//! (lazy) read of it. The check is cached by (device, inode, size, mtime).

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use blazesym::symbolize::{
    FindSymOpts, Reason, ResolvedSym, SrcLang, Symbolize, TranslateFileOffset,
};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags};

/// Most bytes the compressed sections of one module (and the debug files blazesym would load
/// for it) may inflate to, in total.
pub const MAX_INFLATED_PER_MODULE: u64 = 256 << 20;

/// Most function symbols [`SymtabResolver`] keeps for one file.
pub const MAX_SYMTAB_SYMBOLS: usize = 1 << 22;

/// Link depth followed (module → debug file → its supplementary file).
const MAX_LINK_DEPTH: usize = 2;

/// The directories blazesym looks for debug files in (its `DEFAULT_DEBUG_DIRS`).
const DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug/"];

const SHF_COMPRESSED: u64 = 0x800;
const ELFCOMPRESS_ZLIB: u32 = 1;

/// Why a file cannot be handed to blazesym.
pub type Unsafe = String;

/// Highest address a loadable segment may reach (user space is far below).
const MAX_SEGMENT_END: u64 = 1 << 63;

/// Check one ELF file before blazesym reads it: its segments' and sections' ranges do not
/// overflow (blazesym adds them unchecked), and every `SHF_COMPRESSED` zlib section is inflated
/// and counted against `budget` (what is left of the module's allowance), keeping nothing.
/// Err when a section states or inflates to more than is left, or inflates to more than it
/// states. A file `object` cannot parse is an error too: it cannot be checked.
pub fn check_file(data: &[u8], budget: &mut u64) -> Result<(), Unsafe> {
    let obj = object::File::parse(data).map_err(|e| format!("not a readable ELF file ({e})"))?;
    if obj.format() != object::BinaryFormat::Elf {
        return Err(format!("not an ELF file ({:?})", obj.format()));
    }
    for seg in obj.segments() {
        let (offset, filesz) = seg.file_range();
        let end = seg.address().checked_add(seg.size().max(filesz));
        if offset.checked_add(filesz).is_none() || end.is_none_or(|e| e > MAX_SEGMENT_END) {
            return Err(format!(
                "a PT_LOAD segment's range overflows (offset {offset:#x}, address {:#x})",
                seg.address()
            ));
        }
    }
    for s in obj.sections() {
        let overflows = s.address().checked_add(s.size()).is_none()
            || s.file_range()
                .is_some_and(|(o, n)| o.checked_add(n).is_none());
        if overflows {
            return Err(format!(
                "section {}'s range overflows",
                s.name().unwrap_or("?")
            ));
        }
    }
    let chdr_len = if obj.is_64() { 24 } else { 12 };
    for s in obj.sections() {
        let SectionFlags::Elf { sh_flags } = s.flags() else {
            continue;
        };
        if sh_flags & SHF_COMPRESSED == 0 {
            continue;
        }
        let name = s.name().unwrap_or("?");
        // blazesym reads the section's file bytes; out of the file it fails cleanly.
        let Ok(raw) = s.data() else { continue };
        let Some(hdr) = raw.get(..chdr_len) else {
            continue; // blazesym: "failed to read ELF compression header"
        };
        let le = obj.is_little_endian();
        let u32_at = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().unwrap_or_default();
            if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let ch_type = u32_at(&hdr[..4]);
        let ch_size = if obj.is_64() {
            let b: [u8; 8] = hdr[8..16].try_into().unwrap_or_default();
            if le {
                u64::from_le_bytes(b)
            } else {
                u64::from_be_bytes(b)
            }
        } else {
            u64::from(u32_at(&hdr[4..8]))
        };
        if ch_type != ELFCOMPRESS_ZLIB {
            continue; // zstd and others: blazesym (built with zlib only) refuses them
        }
        if ch_size > *budget {
            return Err(format!(
                "section {name} states {ch_size} bytes uncompressed: more than the {} MiB allowed per module",
                MAX_INFLATED_PER_MODULE >> 20
            ));
        }
        let limit = ch_size.min(*budget);
        let inflated = inflated_len(&raw[chdr_len..], limit.saturating_add(1));
        if inflated > ch_size {
            return Err(format!(
                "section {name} inflates to more than the {ch_size} bytes it states"
            ));
        }
        *budget -= ch_size.max(inflated);
    }
    Ok(())
}

/// How many bytes the zlib stream `data` inflates to, counting at most `limit` (the output
/// is thrown away as it comes). A corrupt stream counts what came before the damage.
pub fn inflated_len(data: &[u8], limit: u64) -> u64 {
    let mut z = flate2::Decompress::new(true);
    let mut buf = vec![0u8; 64 << 10];
    let mut input = data;
    loop {
        let before_in = z.total_in();
        let before_out = z.total_out();
        let status = z.decompress(input, &mut buf, flate2::FlushDecompress::None);
        let used = usize::try_from(z.total_in() - before_in).unwrap_or(input.len());
        input = input.get(used..).unwrap_or(&[]);
        let out = z.total_out();
        if out >= limit {
            return out;
        }
        match status {
            Ok(flate2::Status::StreamEnd) | Err(_) => return out,
            Ok(_) if out == before_out && used == 0 => return out, // no progress: truncated
            Ok(_) => {}
        }
    }
}

/// The files a module's DWARF may come from besides the module itself, as blazesym finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// `.gnu_debuglink`: a file name.
    pub debuglink: Option<OsString>,
    /// `.gnu_debugaltlink` or `.debug_sup`: a path (dwz's common file).
    pub supplementary: Vec<OsString>,
    /// `.note.gnu.build-id`.
    pub build_id: Option<Vec<u8>>,
}

fn c_string(b: &[u8]) -> Option<&[u8]> {
    let end = b.iter().position(|&c| c == 0)?;
    Some(&b[..end]).filter(|s| !s.is_empty())
}

/// The link sections of the ELF file `data` (nothing when it is not one).
pub fn links(data: &[u8]) -> Links {
    let mut l = Links::default();
    let Ok(obj) = object::File::parse(data) else {
        return l;
    };
    let section = |name: &str| obj.section_by_name(name).and_then(|s| s.data().ok());
    if let Some(d) = section(".gnu_debuglink").and_then(c_string) {
        l.debuglink = Some(OsStr::from_bytes(d).to_os_string());
    }
    if let Some(d) = section(".gnu_debugaltlink").and_then(c_string) {
        l.supplementary.push(OsStr::from_bytes(d).to_os_string());
    }
    // .debug_sup: version (u16), is_supplementary (u8), file name, checksum.
    if let Some(d) = section(".debug_sup")
        .and_then(|d| d.get(3..))
        .and_then(c_string)
    {
        l.supplementary.push(OsStr::from_bytes(d).to_os_string());
    }
    // The note's header is 12 bytes, then "GNU\0", then the id.
    if let Some(d) = section(".note.gnu.build-id").and_then(|d| d.get(16..)) {
        l.build_id = Some(d.iter().copied().take(64).collect());
    }
    l
}

/// Where blazesym looks for the linked file `linkee` of the module at `linker` (its
/// `DebugFileIter`): the build-id paths and the name in the debug directories, next to the
/// (canonical) module, and in the debug directories under the module's directory and each of
/// its parents.
pub fn link_candidates(linker: &Path, linkee: &OsStr, build_id: Option<&[u8]>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let canonical = linker
        .canonicalize()
        .unwrap_or_else(|_| linker.to_path_buf());
    if let Some(id) = build_id.filter(|id| id.len() >= 8) {
        let hex: String = id[1..].iter().map(|b| format!("{b:02x}")).collect();
        for d in DEBUG_DIRS {
            out.push(
                Path::new(d)
                    .join(".build-id")
                    .join(format!("{:02x}", id[0]))
                    .join(format!("{hex}.debug")),
            );
        }
    }
    for d in DEBUG_DIRS {
        out.push(Path::new(d).join(linkee));
    }
    out.push(canonical.with_file_name(linkee));
    let rel: PathBuf = {
        let mut c = canonical.components();
        let _ = c.next();
        let _ = c.next_back();
        c.as_path().to_path_buf()
    };
    for d in DEBUG_DIRS {
        let mut dir = Some(rel.as_path());
        while let Some(p) = dir.filter(|p| !p.as_os_str().is_empty()) {
            out.push(Path::new(d).join(p).join(linkee));
            dir = p.parent();
        }
        out.push(Path::new(d).join(&rel).join(linkee));
    }
    out.retain(|p| *p != canonical);
    out.sort();
    out.dedup();
    out
}

/// A file by path, if it exists: its identity and bytes. Err when it exists but is not a
/// regular file (blazesym would map a device or wait on a FIFO) or cannot be mapped.
fn map_file(path: &Path) -> Result<Option<(FileId, memmap2::Mmap)>, Unsafe> {
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking (a FIFO swapped in after a check would block a plain open), and
    // judged by what was opened, not by a second look at the path.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Ok(None), // blazesym cannot open it either
    };
    let Ok(meta) = file.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    // SAFETY: read-only private mapping; see stack::unwind for the caveat.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| format!("{}: cannot be mapped ({e})", path.display()))?;
    Ok(Some((FileId::of(&meta), map)))
}

/// A file's identity for the cache: (device, inode, size, mtime in ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(u64, u64, u64, i128);

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId(
            m.dev(),
            m.ino(),
            m.size(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    }
}

/// Check the module blazesym would open as `actual` (a `/proc/PID/map_files/…` entry) or
/// `symbolic` (the path in `/proc/PID/maps`), its `.dwp`, and the debug files it links to.
pub fn check_module(actual: &Path, symbolic: &Path) -> Result<(), Unsafe> {
    let mut budget = MAX_INFLATED_PER_MODULE;
    let mut seen: Vec<FileId> = Vec::new();
    // (path to open, path blazesym knows it by, depth)
    let mut todo: Vec<(PathBuf, PathBuf, usize)> = vec![
        (actual.to_path_buf(), symbolic.to_path_buf(), 0),
        (symbolic.to_path_buf(), symbolic.to_path_buf(), 0),
    ];
    let mut dwp = symbolic.as_os_str().to_os_string();
    dwp.push(".dwp");
    todo.push((PathBuf::from(&dwp), PathBuf::from(&dwp), MAX_LINK_DEPTH));
    while let Some((path, known_as, depth)) = todo.pop() {
        let Some((id, map)) = map_file(&path)? else {
            continue;
        };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        check_file(&map, &mut budget).map_err(|e| format!("{}: {e}", path.display()))?;
        if depth >= MAX_LINK_DEPTH {
            continue;
        }
        let l = links(&map);
        let names = l.debuglink.iter().chain(&l.supplementary);
        for name in names {
            let is_debuglink = Some(name) == l.debuglink.as_ref();
            if is_debuglink && name.as_bytes().contains(&b'/') {
                return Err(format!(
                    "{}: debug link {:?} is a path, not a file name",
                    path.display(),
                    name
                ));
            }
            for c in link_candidates(&known_as, name, l.build_id.as_deref()) {
                todo.push((c.clone(), c, depth + 1));
            }
        }
    }
    Ok(())
}

/// Verdicts by file and name (a module mapped by many processes is checked once).
#[derive(Default)]
pub struct GuardCache {
    verdicts: HashMap<(FileId, PathBuf), Result<(), Unsafe>>,
}

/// Entries kept before the cache is cleared.
const MAX_CACHED_VERDICTS: usize = 10_000;

impl GuardCache {
    /// [`check_module`], remembered.
    pub fn check(&mut self, actual: &Path, symbolic: &Path) -> Result<(), Unsafe> {
        let id = std::fs::metadata(actual)
            .or_else(|_| std::fs::metadata(symbolic))
            .map(|m| FileId::of(&m));
        let Ok(id) = id else {
            return check_module(actual, symbolic);
        };
        let key = (id, symbolic.to_path_buf());
        if let Some(v) = self.verdicts.get(&key) {
            return v.clone();
        }
        if self.verdicts.len() >= MAX_CACHED_VERDICTS {
            self.verdicts.clear();
        }
        let v = check_module(actual, symbolic);
        self.verdicts.insert(key, v.clone());
        v
    }
}

/// A function symbol of [`SymtabResolver`].
#[derive(Clone, Debug)]
struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

/// Function names of one ELF file from `.symtab` and `.dynsym`, without DWARF, without
/// decompressing anything: for modules that fail [`check_module`]. Symbol tables are read as
/// they are in the file (a compressed one gives no names, not a decompression).
#[derive(Debug)]
pub struct SymtabResolver {
    module: OsString,
    syms: Vec<Sym>,
    /// PT_LOAD (offset, filesz, vaddr).
    loads: Vec<(u64, u64, u64)>,
}

impl SymtabResolver {
    /// Build from the file's bytes (an empty resolver when they are not ELF).
    pub fn from_elf(data: &[u8], module: OsString) -> SymtabResolver {
        let mut r = SymtabResolver {
            module,
            syms: Vec::new(),
            loads: Vec::new(),
        };
        let Ok(obj) = object::File::parse(data) else {
            return r;
        };
        for seg in obj.segments() {
            let (offset, filesz) = seg.file_range();
            r.loads.push((offset, filesz, seg.address()));
        }
        for s in obj.symbols().chain(obj.dynamic_symbols()) {
            if r.syms.len() >= MAX_SYMTAB_SYMBOLS {
                break;
            }
            if s.kind() != object::SymbolKind::Text || s.address() == 0 {
                continue;
            }
            let Ok(name) = s.name_bytes() else { continue };
            if name.is_empty() {
                continue;
            }
            r.syms.push(Sym {
                addr: s.address(),
                size: s.size(),
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        r.syms.sort_by(|a, b| {
            (a.addr, std::cmp::Reverse(a.size)).cmp(&(b.addr, std::cmp::Reverse(b.size)))
        });
        r.syms.dedup_by_key(|s| s.addr);
        r
    }

    /// The function symbol containing `addr` (a virtual address of the file).
    fn lookup(&self, addr: u64) -> Option<&Sym> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.syms[i];
        let inside = if s.size > 0 {
            addr - s.addr < s.size
        } else {
            // No size: up to the next symbol.
            self.syms.get(i + 1).is_none_or(|n| addr < n.addr)
        };
        inside.then_some(s)
    }
}

impl Symbolize for SymtabResolver {
    fn find_sym(
        &self,
        addr: u64,
        _opts: &FindSymOpts,
    ) -> blazesym::Result<Result<ResolvedSym<'_>, Reason>> {
        Ok(match self.lookup(addr) {
            Some(s) => Ok(ResolvedSym {
                name: &s.name,
                module: Some(&self.module),
                addr: s.addr,
                size: usize::try_from(s.size).ok().filter(|&n| n > 0),
                lang: SrcLang::Unknown,
                code_info: None,
                inlined: Box::new([]),
                _non_exhaustive: (),
            }),
            None if self.syms.is_empty() => Err(Reason::MissingSyms),
            None => Err(Reason::UnknownAddr),
        })
    }
}

impl TranslateFileOffset for SymtabResolver {
    fn file_offset_to_virt_offset(&self, file_offset: u64) -> blazesym::Result<Option<u64>> {
        Ok(self.loads.iter().find_map(|&(offset, filesz, vaddr)| {
            let rel = file_offset.checked_sub(offset)?;
            (rel < filesz).then(|| vaddr.checked_add(rel)).flatten()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn counts_inflated_bytes_up_to_the_limit() {
        let z = zlib(&vec![0u8; 10 << 20]);
        assert!(z.len() < 64 << 10, "{}", z.len());
        assert_eq!(inflated_len(&z, u64::MAX), 10 << 20);
        let cut = inflated_len(&z, 100);
        assert!((100..=(128 << 10)).contains(&cut), "{cut}");
        assert_eq!(inflated_len(b"not zlib", u64::MAX), 0);
        assert!(inflated_len(&z[..z.len() / 2], u64::MAX) < 10 << 20);
    }

    #[test]
    fn own_binary_passes_and_has_symbols() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let mut budget = MAX_INFLATED_PER_MODULE;
        check_file(&me, &mut budget).unwrap();
        let r = SymtabResolver::from_elf(&me, "me".into());
        assert!(!r.syms.is_empty());
        let s = &r.syms[r.syms.len() / 2];
        assert_eq!(r.lookup(s.addr).unwrap().name, s.name);
        assert!(r.file_offset_to_virt_offset(u64::MAX).unwrap().is_none());
        assert!(check_file(b"garbage", &mut budget).is_err());
    }

    #[test]
    fn candidates_follow_blazesym() {
        let c = link_candidates(
            Path::new("/nonexistent/dir/app"),
            OsStr::new("app.debug"),
            Some(&[0xab, 1, 2, 3, 4, 5, 6, 7]),
        );
        for want in [
            "/usr/lib/debug/.build-id/ab/01020304050607.debug",
            "/usr/lib/debug/app.debug",
            "/nonexistent/dir/app.debug",
            "/usr/lib/debug/nonexistent/dir/app.debug",
            "/lib/debug/nonexistent/app.debug",
        ] {
            assert!(c.contains(&PathBuf::from(want)), "{want} not in {c:?}");
        }
    }
}
