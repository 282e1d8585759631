//! Parsers for the /proc files stallprobe reads, and small readers around them.
//!
//! Parsers are pure functions over the file's text (unit- and property-tested without root);
//! readers return `None` when a file is gone, because a thread or process may exit at any time.

use std::{fs, io, os::unix::ffi::OsStrExt, path::PathBuf};

use crate::report::{KernelFrame, clean, target_text};

/// One field of /proc/PID/status (`Name:`, `CapEff:`, `NSpid:` ...), without the key.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// The fields of /proc/PID/task/TID/stat that stallprobe uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// R, S, D, Z, T, t, X, I ...
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u32,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
    /// Exit code (field 52), as waitpid would report it; 0 while alive.
    pub exit_code: Option<i32>,
}

/// Parse a stat line. `comm` may contain spaces and parentheses, so split at the last `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = clean(&s[open + 1..close]);
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state).
    let field = |n: usize| rest.get(n - 3).copied();
    let num = |n: usize| field(n).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        state: field(3)?.chars().next()?,
        ppid: num(4)? as u32,
        utime: num(14)?,
        stime: num(15)?,
        num_threads: num(20)? as u32,
        starttime: num(22)?,
        exit_code: field(52).and_then(|v| v.parse().ok()),
    })
}

/// /proc/PID/task/TID/syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallState {
    /// On a CPU right now.
    Running,
    /// Not in a syscall (blocked in user space? preempted? stopped).
    NotInSyscall { sp: u64, pc: u64 },
    /// In syscall `nr` with these arguments.
    InSyscall {
        nr: u32,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
}

pub fn parse_syscall(s: &str) -> Option<SyscallState> {
    let s = s.trim();
    if s == "running" {
        return Some(SyscallState::Running);
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    match parts.as_slice() {
        ["-1", sp, pc] => Some(SyscallState::NotInSyscall {
            sp: hex(sp)?,
            pc: hex(pc)?,
        }),
        [nr, a0, a1, a2, a3, a4, a5, sp, pc] => Some(SyscallState::InSyscall {
            nr: nr.parse().ok()?,
            args: [hex(a0)?, hex(a1)?, hex(a2)?, hex(a3)?, hex(a4)?, hex(a5)?],
            sp: hex(sp)?,
            pc: hex(pc)?,
        }),
        _ => None,
    }
}

/// Kernel frames from /proc/PID/task/TID/stack (`[<0>] futex_do_wait+0x46/0x90`).
pub fn parse_kernel_stack(s: &str) -> Vec<KernelFrame> {
    s.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (addr, rest) = match l.strip_prefix("[<") {
                Some(r) => {
                    let (a, rest) = r.split_once(">]")?;
                    (u64::from_str_radix(a, 16).unwrap_or(0), rest.trim())
                }
                None => (0, l),
            };
            if rest.is_empty() {
                return None;
            }
            let (name, off) = match rest.split_once('+') {
                Some((n, o)) => {
                    let o = o.split('/').next().unwrap_or("");
                    (n, u64::from_str_radix(o.trim_start_matches("0x"), 16).ok())
                }
                None => (rest, None),
            };
            Some(KernelFrame {
                addr,
                function: name.split_whitespace().next().unwrap_or(name).to_string(),
                offset: off,
            })
        })
        .collect()
}

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Path, `[stack]`, `[vdso]`..., or empty for anonymous memory. A deleted file keeps its
    /// ` (deleted)` suffix here.
    pub path: String,
}

impl Mapping {
    pub fn is_exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

pub fn parse_maps(s: &str) -> Vec<Mapping> {
    s.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(l: &str) -> Option<Mapping> {
    let mut it = l.splitn(6, char::is_whitespace);
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let _dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_string(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_string(),
    })
}

/// The ids of a task in each pid namespace, outermost first (`NSpid:` of status).
pub fn parse_nspid(status: &str) -> Vec<u32> {
    status_field(status, "NSpid")
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

// ---- readers -------------------------------------------------------------------------------------

pub fn proc_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

pub fn task_path(pid: u32, tid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/task/{tid}"))
}

/// A /proc file's text. The target chooses some of it (its name, its paths): invalid UTF-8
/// is kept as `\xNN` rather than failing the read (a process whose name is not UTF-8 is not
/// "gone"); the parsers clean the fields they take.
fn read_checked(p: PathBuf) -> io::Result<String> {
    let b = fs::read(p)?;
    Ok(match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => {
            let b = e.into_bytes();
            let mut out = String::with_capacity(b.len());
            for chunk in b.utf8_chunks() {
                out.push_str(chunk.valid());
                for x in chunk.invalid() {
                    out.push_str(&format!("\\x{x:02x}"));
                }
            }
            out
        }
    })
}

fn read(p: PathBuf) -> Option<String> {
    read_checked(p).ok()
}

/// Only "no such file" (and ESRCH, which /proc gives for a task being reaped) mean that a
/// process or thread is gone; any other error (EMFILE, EACCES …) says nothing about it.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Whether the process exists and is not a zombie — and, with `start`, is the process that
/// was started then (a reused pid is another process). When /proc cannot say (an error other
/// than "gone"), it is taken as alive: watching goes on.
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    match read_checked(proc_path(pid).join("stat")) {
        Err(e) => !is_gone(&e),
        Ok(s) => match parse_stat(&s) {
            Some(st) => {
                st.state != 'Z' && st.state != 'X' && start.is_none_or(|t| t == st.starttime)
            }
            None => true,
        },
    }
}

/// Whether a thread still exists (false only when /proc says it is gone).
pub fn thread_exists(pid: u32, tid: u32) -> bool {
    match fs::symlink_metadata(task_path(pid, tid)) {
        Ok(_) => true,
        Err(e) => !is_gone(&e),
    }
}

pub fn process_exists(pid: u32) -> bool {
    proc_path(pid).join("stat").exists()
}

pub fn read_stat(pid: u32, tid: u32) -> Option<Stat> {
    read(task_path(pid, tid).join("stat")).and_then(|s| parse_stat(&s))
}

pub fn read_process_stat(pid: u32) -> Option<Stat> {
    read(proc_path(pid).join("stat")).and_then(|s| parse_stat(&s))
}

pub fn read_syscall(pid: u32, tid: u32) -> Option<SyscallState> {
    read(task_path(pid, tid).join("syscall")).and_then(|s| parse_syscall(&s))
}

pub fn read_kernel_stack(pid: u32, tid: u32) -> Vec<KernelFrame> {
    read(task_path(pid, tid).join("stack"))
        .map(|s| parse_kernel_stack(&s))
        .unwrap_or_default()
}

pub fn read_comm(pid: u32, tid: u32) -> Option<String> {
    let b = fs::read(task_path(pid, tid).join("comm")).ok()?;
    Some(target_text(b.strip_suffix(b"\n").unwrap_or(&b)))
}

pub fn read_maps(pid: u32) -> Option<Vec<Mapping>> {
    read(proc_path(pid).join("maps")).map(|s| parse_maps(&s))
}

pub fn read_status(pid: u32, tid: u32) -> Option<String> {
    read(task_path(pid, tid).join("status"))
}

/// The executable's path (`/proc/PID/exe`), with ` (deleted)` when it was removed.
pub fn read_exe(pid: u32) -> Option<String> {
    fs::read_link(proc_path(pid).join("exe"))
        .ok()
        .map(|p| target_text(p.as_os_str().as_bytes()))
}

pub fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(proc_path(pid).join("cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(target_text)
            .collect(),
    )
}

/// Thread ids of a process, sorted.
/// /proc/PID/task/TID/schedstat: ns on a CPU, ns waiting on a run queue (and time slices).
pub fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn read_schedstat(pid: u32, tid: u32) -> Option<(u64, u64)> {
    read(task_path(pid, tid).join("schedstat")).and_then(|s| parse_schedstat(&s))
}

/// What an fd points to (`socket:[123]`, `pipe:[45]`, `/path`, `anon_inode:[eventpoll]`).
pub fn read_fd_target(pid: u32, fd: u64) -> Option<String> {
    fs::read_link(proc_path(pid).join("fd").join(fd.to_string()))
        .ok()
        .map(|p| target_text(p.as_os_str().as_bytes()))
}

/// Clock ticks per second (for utime/stime).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = "4242 (my (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 12345 1000 100 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "my (weird) name");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.utime, 7);
        assert_eq!(st.stime, 3);
        assert_eq!(st.num_threads, 5);
        assert_eq!(st.starttime, 12345);
        assert_eq!(st.exit_code, Some(0));
    }

    #[test]
    fn syscall_file_forms() {
        assert_eq!(parse_syscall("running\n"), Some(SyscallState::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffd1000 0x401000\n"),
            Some(SyscallState::NotInSyscall {
                sp: 0x7ffd1000,
                pc: 0x401000
            })
        );
        let s = "202 0x55d0c0a2e040 0x80 0x2 0x0 0x0 0x0 0x7f2c3a1fed38 0x7f2c3a49b1d6\n";
        match parse_syscall(s).unwrap() {
            SyscallState::InSyscall { nr, args, sp, pc } => {
                assert_eq!(nr, 202);
                assert_eq!(args[0], 0x55d0c0a2e040);
                assert_eq!(args[1], 0x80);
                assert_eq!(sp, 0x7f2c3a1fed38);
                assert_eq!(pc, 0x7f2c3a49b1d6);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_syscall("garbage"), None);
    }

    #[test]
    fn kernel_stack_lines() {
        let s = "[<0>] futex_do_wait+0x46/0x90\n[<0>] __futex_wait+0x91/0x110\n[<0>] do_syscall_64+0x82/0x190\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";
        let f = parse_kernel_stack(s);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].function, "futex_do_wait");
        assert_eq!(f[0].offset, Some(0x46));
        assert_eq!(f[3].function, "entry_SYSCALL_64_after_hwframe");
    }

    #[test]
    fn maps_lines() {
        let s = "55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /usr/bin/my prog\n\
                 55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 1234 /usr/bin/my prog\n\
                 7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
                 7f0000001000-7f0000002000 r-xp 00000000 fe:01 99 /tmp/x (deleted)\n";
        let m = parse_maps(s);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].path, "/usr/bin/my prog");
        assert!(m[1].is_exec() && m[1].is_file());
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[2].path, "[stack]");
        assert!(!m[2].is_file());
        assert_eq!(m[3].path, "");
        assert_eq!(m[4].path, "/tmp/x (deleted)");
    }

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat("2460000000 1200 17\n"),
            Some((2_460_000_000, 1200))
        );
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn nspid() {
        let s = "Name:\tx\nNSpid:\t4242\t7\nPPid:\t1\n";
        assert_eq!(parse_nspid(s), vec![4242, 7]);
        assert_eq!(status_field(s, "PPid"), Some("1"));
        assert_eq!(status_field(s, "Nope"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_stat(&s);
            let _ = parse_syscall(&s);
            let _ = parse_kernel_stack(&s);
            let _ = parse_maps(&s);
            let _ = parse_nspid(&s);
            let _ = parse_schedstat(&s);
        }

        #[test]
        fn stat_roundtrip(comm in "[ -~]{0,15}", state in "[RSDZTI]", ut in 0u64..1u64<<40, st in 0u64..1u64<<40, nt in 1u32..100000) {
            let line = format!("1 ({comm}) {state} 1 1 1 0 -1 0 0 0 0 0 {ut} {st} 0 0 20 0 {nt} 0 42 0 0");
            let p = parse_stat(&line).unwrap();
            prop_assert_eq!(p.comm, comm);
            prop_assert_eq!(p.utime, ut);
            prop_assert_eq!(p.stime, st);
            prop_assert_eq!(p.num_threads, nt);
        }

        #[test]
        fn maps_roundtrip(start in 0u64..1u64<<46, len in 1u64..1u64<<20, off in 0u64..1u64<<32, inode in 0u64..1u64<<32, path in "(/[a-z ]{1,20}){0,3}") {
            let line = format!("{:x}-{:x} r-xp {:08x} fe:01 {} {}", start, start + len, off, inode, path);
            let m = parse_maps(&line);
            prop_assert_eq!(m.len(), 1);
            prop_assert_eq!(m[0].start, start);
            prop_assert_eq!(m[0].end, start + len);
            prop_assert_eq!(m[0].offset, off);
            prop_assert_eq!(&m[0].path, path.trim_start());
        }
    }
}
