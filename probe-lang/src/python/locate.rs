//! Finding the interpreter in a process: which mapped module holds `_PyRuntime`, where it is
//! loaded, which CPython version it is; and glibc's offset of the tid in `struct pthread`.

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use std::path::{Path, PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// The mapped file; None for anonymous mappings and `[heap]`-style names.
    pub path: Option<PathBuf>,
}

/// Parse `/proc/PID/maps` text; lines that do not parse are skipped.
pub fn parse_maps(text: &str) -> Vec<MapLine> {
    text.lines().filter_map(parse_map_line).collect()
}

fn parse_map_line(line: &str) -> Option<MapLine> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let name = it.next().unwrap_or("").trim_start();
    let (s, e) = range.split_once('-')?;
    let path = name
        .starts_with('/')
        .then(|| PathBuf::from(name.strip_suffix(" (deleted)").unwrap_or(name)));
    Some(MapLine {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        path,
    })
}

/// The modules that may hold the interpreter, most likely first: `libpython3.X*.so*`, then
/// executables named `python*`, then the first mapped file (the executable of a program that
/// embeds CPython statically). Each path once.
pub fn candidates(maps: &[MapLine]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let paths = || maps.iter().filter_map(|m| m.path.as_ref());
    for p in paths().filter(|p| {
        let n = file_name(p);
        n.starts_with("libpython") && n.contains(".so")
    }) {
        push_once(&mut out, p);
    }
    for p in paths().filter(|p| file_name(p).starts_with("python")) {
        push_once(&mut out, p);
    }
    if let Some(p) = paths().next() {
        push_once(&mut out, p);
    }
    out
}

fn push_once(out: &mut Vec<PathBuf>, p: &Path) {
    if !out.iter().any(|q| q == p) {
        out.push(p.to_path_buf());
    }
}

/// `minor` from a file name like `libpython3.11.so.1.0`, `python3.12`, `libpython3.9d.so`.
pub fn minor_from_name(path: &Path) -> Option<u32> {
    let n = path.file_name()?.to_str()?;
    let rest = n
        .strip_prefix("libpython3.")
        .or_else(|| n.strip_prefix("python3."))?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The load bias of `path` (runtime address = bias + ELF virtual address), from its mappings.
pub fn load_bias(maps: &[MapLine], path: &Path, elf: &[u8]) -> Option<u64> {
    let file = object::File::parse(elf).ok()?;
    let m = maps
        .iter()
        .filter(|m| m.path.as_deref() == Some(path))
        .min_by_key(|m| m.offset)?;
    file.segments().find_map(|seg| {
        let (p_offset, filesz) = seg.file_range();
        let aligned = p_offset & !0xfff;
        (aligned <= m.offset && m.offset < p_offset.saturating_add(filesz.max(1))).then(|| {
            m.start
                .wrapping_sub(m.offset)
                .wrapping_add(p_offset)
                .wrapping_sub(seg.address())
        })
    })
}

/// What the interpreter's ELF file tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleFacts {
    /// ELF virtual addresses (add the load bias).
    pub runtime: Option<u64>,
    pub code_type: Option<u64>,
    pub unicode_type: Option<u64>,
    pub bytes_type: Option<u64>,
    /// `Py_Version` (3.11+): PY_VERSION_HEX.
    pub version_hex: Option<u32>,
    /// A `3.X.Y` string from `.rodata` (the PY_VERSION literal), when one is found.
    pub version_text: Option<String>,
}

/// Read the symbols and version facts of an interpreter module. None if the bytes are not ELF.
pub fn module_facts(elf: &[u8]) -> Option<ModuleFacts> {
    let file = object::File::parse(elf).ok()?;
    let mut f = ModuleFacts::default();
    let mut version_addr = None;
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        let slot = match sym.name() {
            Ok("_PyRuntime") => &mut f.runtime,
            Ok("PyCode_Type") => &mut f.code_type,
            Ok("PyUnicode_Type") => &mut f.unicode_type,
            Ok("PyBytes_Type") => &mut f.bytes_type,
            Ok("Py_Version") => &mut version_addr,
            _ => continue,
        };
        if slot.is_none() && sym.address() != 0 {
            *slot = Some(sym.address());
        }
    }
    f.version_hex = version_addr.and_then(|a| read_u32_at(&file, a));
    f.version_text = rodata_version(&file);
    Some(f)
}

fn read_u32_at(file: &object::File, addr: u64) -> Option<u32> {
    file.sections().find_map(|s| {
        let d = s.data_range(addr, 4).ok()??;
        Some(u32::from_le_bytes(d.try_into().ok()?))
    })
}

/// The most frequent `3.X.Y` (X ≥ 6) NUL-terminated string tail in `.rodata`. The linker may
/// merge the PY_VERSION literal into the tail of a longer string such as the install prefix
/// `/root/.pyenv/versions/3.10.13`, so tails count too.
fn rodata_version(file: &object::File) -> Option<String> {
    let data = file.section_by_name(".rodata")?.data().ok()?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for chunk in data.split(|&b| b == 0) {
        let Some(v) = version_tail(chunk) else {
            continue;
        };
        match counts.iter_mut().find(|(s, _)| *s == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
}

/// `3.X.Y[suffix]` at the end of `chunk`, after a non-digit (or at its start).
fn version_tail(chunk: &[u8]) -> Option<String> {
    if chunk.len() > 256 || chunk.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(chunk).ok()?;
    let start = s
        .match_indices("3.")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || !matches!(s.as_bytes()[i - 1], b'0'..=b'9' | b'.'))
        .last()?;
    let v = &s[start..];
    let mut parts = v.splitn(3, '.');
    let (_, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
    let minor: u32 = minor.parse().ok()?;
    let patch_digits: String = patch.chars().take_while(|c| c.is_ascii_digit()).collect();
    let suffix = &patch[patch_digits.len()..];
    let suffix_ok = suffix.is_empty()
        || suffix == "+"
        || ["a", "b", "rc"].iter().any(|p| {
            suffix.strip_prefix(p).is_some_and(|d| {
                !d.is_empty() && d.len() <= 2 && d.bytes().all(|b| b.is_ascii_digit())
            })
        });
    let ok = (6..=20).contains(&minor)
        && !patch_digits.is_empty()
        && patch_digits.len() <= 2
        && suffix_ok;
    ok.then(|| v.to_string())
}

/// glibc's offset of `tid` in `struct pthread`, from the `_thread_db_pthread_tid` descriptor
/// libc exports for libthread_db: three u32s (bits, count, offset).
pub fn pthread_tid_offset(libc_elf: &[u8]) -> Option<u64> {
    let file = object::File::parse(libc_elf).ok()?;
    let sym = file
        .dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.name() == Ok("_thread_db_pthread_tid"))?;
    let d = file
        .sections()
        .find_map(|s| s.data_range(sym.address(), 12).ok()?)?;
    let word = |i: usize| u32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
    (word(0) == 32 && word(1) == 1 && word(2) < 4096).then(|| u64::from(word(2)))
}

/// The libc among the mappings (glibc's `libc.so.6` or an old `libc-2.NN.so`).
pub fn libc_path(maps: &[MapLine]) -> Option<PathBuf> {
    maps.iter().filter_map(|m| m.path.as_ref()).find_map(|p| {
        let n = p.file_name()?.to_str()?;
        (n == "libc.so.6" || (n.starts_with("libc-") && n.ends_with(".so"))).then(|| p.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c6a00000-55d0c6a01000 r--p 00000000 fe:01 1234 /root/.pyenv/versions/3.12.1/bin/python3.12
55d0c6a01000-55d0c6a02000 r-xp 00001000 fe:01 1234 /root/.pyenv/versions/3.12.1/bin/python3.12
55d0c8000000-55d0c8100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r--p 00000000 fe:01 99 /root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0
7f0000100000-7f0000400000 r-xp 00100000 fe:01 99 /root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0
7f1000000000-7f1000020000 r--p 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7f2000000000-7f2000001000 rw-p 00000000 00:00 0 
7f3000000000-7f3000001000 r--p 00000000 fe:01 55 /tmp/gone.so (deleted)
";

    #[test]
    fn maps_and_candidates() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 8);
        assert_eq!(maps[0].start, 0x55d0c6a00000);
        assert_eq!(maps[1].offset, 0x1000);
        assert_eq!(maps[2].path, None, "[heap] is not a file");
        assert_eq!(maps[6].path, None);
        assert_eq!(maps[7].path.as_deref(), Some(Path::new("/tmp/gone.so")));
        let c = candidates(&maps);
        assert_eq!(
            c,
            [
                PathBuf::from("/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"),
                PathBuf::from("/root/.pyenv/versions/3.12.1/bin/python3.12"),
            ]
        );
        assert_eq!(
            libc_path(&maps).unwrap(),
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert!(parse_maps("garbage\n\n1-2 r\n").is_empty());
    }

    #[test]
    fn minor_versions_from_names() {
        assert_eq!(
            minor_from_name(Path::new("/x/libpython3.11.so.1.0")),
            Some(11)
        );
        assert_eq!(minor_from_name(Path::new("/usr/bin/python3.9")), Some(9));
        assert_eq!(minor_from_name(Path::new("/usr/bin/python3")), None);
        assert_eq!(minor_from_name(Path::new("/usr/bin/uwsgi")), None);
    }

    #[test]
    fn version_tails() {
        assert_eq!(version_tail(b"3.10.13").as_deref(), Some("3.10.13"));
        assert_eq!(
            version_tail(b"/root/.pyenv/versions/3.8.18").as_deref(),
            Some("3.8.18")
        );
        assert_eq!(version_tail(b"3.13.0rc2").as_deref(), Some("3.13.0rc2"));
        assert_eq!(version_tail(b"3.13.0").as_deref(), Some("3.13.0"));
        assert_eq!(version_tail(b"3.2.0"), None, "too old to be CPython 3.6+");
        assert_eq!(version_tail(b"13.10.1"), None);
        assert_eq!(version_tail(b"3.11.2x"), None);
        assert_eq!(version_tail(b"3.11."), None);
    }
}
