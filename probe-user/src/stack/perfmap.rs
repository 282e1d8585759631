//! A JIT runtime's perf map (`/tmp/perf-<pid>.map`: `START SIZE name` per line), which names
//! its generated code for profilers. The target writes it, and chooses what is there: it is
//! read inside the target's root, without following a symlink, only when it is a regular
//! file owned by the target's user (or root), and only up to [`CAP`] bytes.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use crate::{
    report::clean,
    target_fs::{self, Refused, Symlinks},
};

/// The most of a perf map read (a busy JVM's is tens of MiB).
pub const CAP: u64 = 128 << 20;
/// Names kept from one map.
pub const MAX_ENTRIES: usize = 2_000_000;

/// A loaded perf map: sorted ranges.
#[derive(Debug, Default)]
pub struct PerfMap {
    ranges: Vec<(u64, u64, String)>,
    /// (size, mtime) of the file when read, to notice when the runtime rewrites it.
    stamp: (u64, i64),
}

/// What became of a process's perf map.
#[derive(Debug)]
pub enum Status {
    Loaded(PerfMap),
    /// The same file as the map given: keep it.
    Unchanged,
    /// None there: nothing to say.
    Missing,
    /// There, but not read: why (for the report's notes).
    Skipped(String),
}

/// Where the process's runtime writes it: `/tmp/perf-<pid in its own pid namespace>.map`.
pub fn path(ns_pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{ns_pid}.map"))
}

/// The uid of a process (`Uid:` of /proc/PID/status, the real one).
fn process_uid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    crate::procfs::status_field(&s, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process's pid in its own pid namespace (the last `NSpid:` entry).
fn ns_pid(pid: u32) -> u32 {
    crate::procfs::read_status(pid, pid)
        .map(|s| crate::procfs::parse_nspid(&s))
        .and_then(|v| v.last().copied())
        .unwrap_or(pid)
}

/// Read the perf map of `pid`, unless `previous` is still current.
pub fn load(pid: u32, previous: Option<&PerfMap>) -> Status {
    let p = path(ns_pid(pid));
    let skipped = |why: String| Status::Skipped(format!("{}: {why}", p.display()));
    let file = match target_fs::open_in_root(pid, &p, CAP, Symlinks::Refuse) {
        Ok(f) => f,
        Err(Refused::Missing) => return Status::Missing,
        Err(e) => return skipped(e.to_string()),
    };
    let Ok(meta) = file.metadata() else {
        return Status::Missing;
    };
    let owner = process_uid(pid);
    if meta.uid() != 0 && Some(meta.uid()) != owner {
        return skipped(format!(
            "owned by uid {}, not by the process's uid {}",
            meta.uid(),
            owner.map(|u| u.to_string()).unwrap_or_else(|| "?".into())
        ));
    }
    let stamp = (meta.len(), meta.mtime());
    if previous.is_some_and(|prev| prev.stamp == stamp) {
        return Status::Unchanged;
    }
    let mut data = Vec::new();
    use std::io::Read;
    if let Err(e) = file.take(CAP).read_to_end(&mut data) {
        return skipped(e.to_string());
    }
    Status::Loaded(PerfMap {
        ranges: parse(&data),
        stamp,
    })
}

/// `START SIZE name` lines (hex, hex, the rest), sorted by start; garbage lines skipped.
pub fn parse(data: &[u8]) -> Vec<(u64, u64, String)> {
    let text = String::from_utf8_lossy(data);
    let mut out: Vec<(u64, u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let start = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
            let size = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
            let name = it.next()?.trim();
            if size == 0 || name.is_empty() {
                return None;
            }
            Some((start, start.checked_add(size)?, clean(name)))
        })
        .take(MAX_ENTRIES)
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

impl PerfMap {
    /// A map from a file's bytes (as [`load`] reads it), for tests and fuzzing.
    pub fn from_bytes(data: &[u8]) -> PerfMap {
        PerfMap {
            ranges: parse(data),
            stamp: (0, 0),
        }
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        let (start, end, name) = self.ranges.get(i.checked_sub(1)?)?;
        (addr >= *start && addr < *end).then_some(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_lookups() {
        let m = PerfMap {
            ranges: parse(
                b"7f0000001000 40 Interpreter\n7f0000002000 0x100 LFoo;::bar (compiled)\ngarbage\n1 0 empty\n",
            ),
            stamp: (0, 0),
        };
        assert_eq!(m.lookup(0x7f00_0000_1010), Some("Interpreter"));
        assert_eq!(m.lookup(0x7f00_0000_20ff), Some("LFoo;::bar (compiled)"));
        assert_eq!(m.lookup(0x7f00_0000_2100), None);
        assert_eq!(m.lookup(0x10), None);
        assert_eq!(parse(b"10 10 \x1b[2Jx\n")[0].2, "\\x1b[2Jx");
    }
}
