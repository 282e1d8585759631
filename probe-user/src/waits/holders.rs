//! Who holds an open file: one pass over /proc/*/fd for every pipe, FIFO and socket a call of
//! [`super::describe_fd`] asks about.
//!
//! Processes come and go during the pass: one that vanishes simply holds nothing. A process
//! whose fd table cannot be read (permissions) makes the pass incomplete, and then nothing is
//! claimed to be "gone". Limits: an fd table unshared by one thread (`unshare(CLONE_FILES)`)
//! is only visible under /proc/PID/task/TID/fd and is not looked at; files in flight in a unix
//! socket message (SCM_RIGHTS) or held by the kernel (io_uring) are not seen.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt,
};

use super::parse::fdinfo_flags;
use crate::report::{End, Holder};

/// What to look for: `pipe:[N]` / `socket:[N]` link texts, and FIFOs by path (as the target
/// sees it) with their device and inode.
#[derive(Default, Debug)]
pub struct Wanted {
    pub links: HashSet<String>,
    pub fifos: HashMap<String, Vec<(u64, u64)>>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.fifos.is_empty()
    }
}

/// The key a FIFO's holders are filed under.
pub fn fifo_key(dev: u64, ino: u64) -> String {
    format!("fifo:{dev}:{ino}")
}

/// What the pass found: for each key (link text or [`fifo_key`]) the (pid, fd) holding it.
#[derive(Default, Debug)]
pub struct Found {
    pub by_key: HashMap<String, Vec<(u32, u64)>>,
    /// Every fd table could be read (or its process had exited).
    pub complete: bool,
    comms: HashMap<u32, String>,
}

impl Found {
    /// The holders of `key`, minus `skip` (the fd being described), with names; pipe ends when
    /// `with_end` (a holder whose fdinfo is gone — it closed the fd — is dropped then).
    pub fn holders(&mut self, key: &str, skip: Option<(u32, u64)>, with_end: bool) -> Vec<Holder> {
        let list = self.by_key.get(key).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for (pid, fd) in list {
            if Some((pid, fd)) == skip {
                continue;
            }
            let end = if with_end {
                match fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                    .ok()
                    .and_then(|s| fdinfo_flags(&s))
                {
                    Some(f) => Some(End::from_flags(f)),
                    None => continue,
                }
            } else {
                None
            };
            let comm = self
                .comms
                .entry(pid)
                .or_insert_with(|| crate::procfs::read_comm(pid, pid).unwrap_or_else(|| "?".into()))
                .clone();
            out.push(Holder { pid, comm, fd, end });
        }
        out
    }
}

/// One pass over /proc/*/fd.
pub fn scan(wanted: &Wanted) -> Found {
    let mut found = Found {
        complete: true,
        ..Found::default()
    };
    if wanted.is_empty() {
        return found;
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        found.complete = false;
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(d) => d,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                // A zombie or exiting process can refuse too: only count it when still alive.
                if crate::procfs::process_alive(pid, None) {
                    found.complete = false;
                }
                continue;
            }
            Err(_) => continue,
        };
        for fe in fds.flatten() {
            let Some(fd) = fe.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let Ok(link) = fs::read_link(fe.path()) else {
                continue;
            };
            let Some(link) = link.to_str() else { continue };
            if wanted.links.contains(link) {
                found
                    .by_key
                    .entry(link.to_string())
                    .or_default()
                    .push((pid, fd));
            } else if let Some(ids) = wanted.fifos.get(link) {
                // Same path text: check it is the same FIFO (mount namespaces differ).
                if let Ok(m) = fs::metadata(fe.path())
                    && ids.contains(&(m.dev(), m.ino()))
                {
                    found
                        .by_key
                        .entry(fifo_key(m.dev(), m.ino()))
                        .or_default()
                        .push((pid, fd));
                }
            }
        }
    }
    found
}
