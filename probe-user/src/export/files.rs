//! Writing output files where someone else may have been first: stallprobe runs as root, often
//! in a directory the watched program's owner can write to (a CI checkout, a service's working
//! directory). So a destination that is a symlink or not a regular file is refused; a file is
//! written to a new temporary file next to it (O_EXCL|O_NOFOLLOW), synced, and renamed over
//! the destination (a reader never sees half a profile; a symlink planted meanwhile is replaced,
//! never written through); and under sudo it belongs to the user who ran sudo.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Why a destination cannot be written, said with the flag that named it.
pub fn check_destination(flag: &str, path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{flag} {}: {e}", path.display())),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{flag} {}: is a symlink; stallprobe does not write through symlinks (remove it, or name the file itself)",
            path.display()
        )),
        Ok(m) if m.is_dir() => Err(format!(
            "{flag} {}: is a directory, expected a file name",
            path.display()
        )),
        Ok(m) if !m.is_file() => Err(format!(
            "{flag} {}: is not a regular file ({}); choose a file name",
            path.display(),
            kind(&m.file_type())
        )),
        Ok(_) => Ok(()),
    }
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// The user who ran `sudo stallprobe`: its files should be theirs, not root's.
pub fn sudo_owner() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let id = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    path.with_file_name(format!(
        ".{name}.stallprobe-tmp.{}.{nonce:x}",
        std::process::id()
    ))
}

/// Write `data` to `path` whole or not at all (see the module documentation).
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Err(e) = check_destination("", path) {
        return Err(io::Error::other(e.trim_start().to_string()));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT|O_EXCL: never an existing file, never a symlink
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o666) // as the umask allows
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        if let Some((uid, gid)) = sudo_owner() {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Append `data` to `path` (created if missing), never through a symlink.
pub fn append_no_follow(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o666)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("stallprobe-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_and_odd_files_are_refused_regular_files_replaced() {
        let d = dir();
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = d.join("out.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = check_destination("-o", &link).unwrap_err();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(write_atomically(&link, b"x").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let e = check_destination("--junit", &d).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = check_destination("--pprof", &fifo).unwrap_err();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        assert!(
            append_no_follow(&link, b"x").is_err(),
            "no append through a symlink"
        );

        let good = d.join("good.txt");
        std::fs::write(&good, "old contents, longer").unwrap();
        write_atomically(&good, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "new");
        let left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("stallprobe-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        append_no_follow(&good, b"+").unwrap();
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "new+");
        let _ = std::fs::remove_dir_all(&d);
    }
}
