//! Opening files the target chose (its perf map, its binaries by path) without trusting it:
//! resolved inside the target's own root (`openat2` with `RESOLVE_IN_ROOT`, so a symlink cannot
//! lead out of it, and no /proc magic link is followed), opened non-blocking (a FIFO cannot
//! stall stallprobe), regular files only, and never read past a size cap.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Whether symlinks may be followed (inside the target's root) on the way to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// Binaries: `/usr/lib/x.so -> x.so.1` is normal.
    Follow,
    /// Files a program writes itself (a perf map): a symlink there is someone's trick.
    Refuse,
}

/// Why a file of the target was not opened or read.
#[derive(Debug)]
pub enum Refused {
    /// Not there (the usual case for a perf map).
    Missing,
    /// A FIFO, a device, a directory...: never read.
    NotRegular(&'static str),
    /// Bigger than the cap.
    TooBig {
        size: u64,
        cap: u64,
    },
    /// A symlink where none is expected.
    Symlink,
    Io(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing => f.write_str("not there"),
            Refused::NotRegular(what) => write!(f, "not a regular file ({what})"),
            Refused::TooBig { size, cap } => write!(
                f,
                "{} MiB, more than the {} MiB stallprobe reads",
                size >> 20,
                cap >> 20
            ),
            Refused::Symlink => f.write_str("a symlink"),
            Refused::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Open `path` (absolute, as the target sees it) inside the root of process `pid`.
pub fn open_in_root(pid: u32, path: &Path, cap: u64, symlinks: Symlinks) -> Result<File, Refused> {
    let root = File::open(format!("/proc/{pid}/root")).map_err(Refused::Io)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| Refused::Io(io::Error::other("a NUL in the path")))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT
            | RESOLVE_NO_MAGICLINKS
            | match symlinks {
                Symlinks::Follow => 0,
                Symlinks::Refuse => RESOLVE_NO_SYMLINKS,
            },
    };
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and a sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => Refused::Missing,
            Some(libc::ELOOP) if symlinks == Symlinks::Refuse => Refused::Symlink,
            _ => Refused::Io(e),
        });
    }
    // SAFETY: a new fd we own.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let meta = file.metadata().map_err(Refused::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        return Err(Refused::NotRegular(if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        }));
    }
    if meta.len() > cap {
        return Err(Refused::TooBig {
            size: meta.len(),
            cap,
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root_and_fifos_are_refused() {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("stallprobe-tfs-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ok");
        std::fs::write(&file, "hello").unwrap();
        let mut text = String::new();
        open_in_root(me, &file, 100, Symlinks::Refuse)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        assert!(matches!(
            open_in_root(me, &file, 2, Symlinks::Refuse),
            Err(Refused::TooBig { size: 5, cap: 2 })
        ));
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            open_in_root(me, &link, 100, Symlinks::Refuse),
            Err(Refused::Symlink)
        ));
        assert!(open_in_root(me, &link, 100, Symlinks::Follow).is_ok());
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            open_in_root(me, &fifo, 100, Symlinks::Follow),
            Err(Refused::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            open_in_root(me, &dir.join("nope"), 100, Symlinks::Follow),
            Err(Refused::Missing)
        ));
        // A magic link of /proc is not followed.
        let magic = dir.join("magic");
        std::os::unix::fs::symlink(format!("/proc/{me}/exe"), &magic).unwrap();
        assert!(open_in_root(me, &magic, 1 << 30, Symlinks::Follow).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
