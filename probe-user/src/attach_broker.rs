//! Asking a JVM for its threads, as the JVM's own user.
//!
//! HotSpot's attach mechanism (what `jcmd` and `jstack` use) wants its client to be the JVM's
//! user: the trigger file goes in the JVM's working directory, SIGQUIT must be allowed, and the
//! JVM checks the socket peer's uid and gid. stallprobe itself keeps no capability that could
//! become another user once attached. So, before anything else, it forks this broker: a small
//! process that keeps only CAP_SETUID, CAP_SETGID (to become a JVM's user), CAP_SYS_PTRACE
//! and CAP_DAC_READ_SEARCH (to check which process and user that is), and holds no BPF object.
//! For each request it forks a worker that checks the process is still the one asked about
//! (pid and start time), becomes its user and group with no capability at all, runs the
//! attach command, and writes the answer to a pipe; the broker relays it, bounded in size and
//! time. The broker exits when stallprobe does.
//!
//! Requests come only from stallprobe, over a socketpair: `dump|perfmap PID START_TIME
//! TIMEOUT_MS`. Answers: `ok LEN` or `err LEN`, then LEN bytes of text.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::wait::waitpid,
    unistd::{ForkResult, fork},
};

/// The most text relayed for one answer (a thread dump of 10,000 threads is ~10 MiB).
const MAX_ANSWER: usize = 17 << 20;

/// What to ask a JVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `jstack -l`: the thread dump with locks.
    ThreadDump,
    /// `jcmd PID Compiler.perfmap`: write /tmp/perf-PID.map (JIT-compiled methods).
    PerfMap,
}

impl Ask {
    fn word(self) -> &'static str {
        match self {
            Ask::ThreadDump => "dump",
            Ask::PerfMap => "perfmap",
        }
    }
}

struct Broker {
    sock: UnixStream,
}

static BROKER: Mutex<Option<Broker>> = Mutex::new(None);

/// Fork the broker now (stallprobe is still one thread, with all its privileges). Without
/// CAP_SETUID/CAP_SETGID there is no broker, and attach requests say why.
pub fn start() -> Result<(), String> {
    let caps = crate::preflight::effective_caps();
    let needed = [crate::preflight::cap::SETUID, crate::preflight::cap::SETGID];
    if needed.iter().any(|&c| caps & (1u64 << c) == 0) {
        return Err("stallprobe has no CAP_SETUID/CAP_SETGID to run as a JVM's user".into());
    }
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: stallprobe is single-threaded here (this runs before the async runtime and any
    // thread start); the child only runs the broker loop and exits.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ours);
            let code = match broker_main(theirs) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leave without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { .. } => {
            drop(theirs);
            if let Ok(mut b) = BROKER.lock() {
                *b = Some(Broker { sock: ours });
            }
            Ok(())
        }
    }
}

/// Ask the JVM `pid` (started at `start_time`, in clock ticks since boot, from /proc/PID/stat)
/// for `ask`, within `timeout`. The answer's text, or why not.
pub fn ask(ask: Ask, pid: u32, start_time: u64, timeout: Duration) -> Result<String, String> {
    let mut guard = BROKER
        .lock()
        .map_err(|_| "the attach broker is gone".to_string())?;
    let b = guard
        .as_mut()
        .ok_or_else(|| "no attach broker (stallprobe lacks CAP_SETUID/CAP_SETGID)".to_string())?;
    let ms = timeout.as_millis().min(u128::from(u32::MAX)) as u32;
    let req = format!("{} {pid} {start_time} {ms}\n", ask.word());
    // The broker answers within the timeout plus a margin for the worker's start and exit.
    let limit = timeout + Duration::from_secs(3);
    let io = |e: std::io::Error| format!("the attach broker: {e}");
    b.sock.set_write_timeout(Some(limit)).map_err(io)?;
    b.sock.set_read_timeout(Some(limit)).map_err(io)?;
    b.sock.write_all(req.as_bytes()).map_err(io)?;
    let (ok, text) = read_answer(&mut b.sock).map_err(io)?;
    if ok { Ok(text) } else { Err(text) }
}

fn read_answer(r: &mut impl Read) -> std::io::Result<(bool, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 64 {
        r.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let bad = || std::io::Error::other(format!("a garbled answer: {head:?}"));
    let (kind, len) = head.split_once(' ').ok_or_else(bad)?;
    let len: usize = len.parse().map_err(|_| bad())?;
    if len > MAX_ANSWER {
        return Err(bad());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((kind == "ok", String::from_utf8_lossy(&body).into_owned()))
}

/// The `broker_answer` fuzz target: what the broker reads from a worker (which runs as the
/// JVM's user, so its bytes are the target's) and from stallprobe, over arbitrary bytes.
pub(crate) fn parse_untrusted(data: &[u8]) {
    if let Ok((_, text)) = read_answer(&mut &data[..]) {
        assert!(text.len() <= MAX_ANSWER * 3, "answer over the cap");
    }
    let _ = parse_request(&String::from_utf8_lossy(data));
}

fn write_answer(w: &mut impl Write, ok: bool, text: &str) -> std::io::Result<()> {
    let body = &text.as_bytes()[..text.len().min(MAX_ANSWER)];
    writeln!(w, "{} {}", if ok { "ok" } else { "err" }, body.len())?;
    w.write_all(body)?;
    w.flush()
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    ask: Ask,
    pid: u32,
    start_time: u64,
    timeout: Duration,
}

fn parse_request(line: &str) -> Option<Request> {
    let mut f = line.split_whitespace();
    let ask = match f.next()? {
        "dump" => Ask::ThreadDump,
        "perfmap" => Ask::PerfMap,
        _ => return None,
    };
    let pid: u32 = f.next()?.parse().ok().filter(|&p| p > 0)?;
    let start_time: u64 = f.next()?.parse().ok()?;
    let ms: u64 = f.next()?.parse().ok()?;
    if f.next().is_some() {
        return None;
    }
    Some(Request {
        ask,
        pid,
        start_time,
        timeout: Duration::from_millis(ms.min(120_000)),
    })
}

fn broker_main(sock: UnixStream) -> Result<(), String> {
    use crate::preflight::cap;
    // Die with stallprobe; hold nothing of it but this socket.
    // SAFETY: prctl, open, dup2 and close_range with integer arguments and a valid path.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"stallprobe-att".as_ptr(), 0, 0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::dup2(sock.as_raw_fd(), 3);
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    std::mem::forget(sock);
    // SAFETY: fd 3 is the socket, duplicated above and owned from here on.
    let sock = unsafe { UnixStream::from_raw_fd(3) };
    crate::privileges::limit_to(&[
        cap::SETUID,
        cap::SETGID,
        cap::SYS_PTRACE,
        cap::DAC_READ_SEARCH,
    ])?;
    let mut out = sock.try_clone().map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(sock);
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let answer = match parse_request(&line) {
            Some(req) => serve(&req),
            None => Err(format!(
                "a request the broker does not know: {:?}",
                line.trim()
            )),
        };
        let (ok, text) = match answer {
            Ok(t) => (true, t),
            Err(e) => (false, e),
        };
        if write_answer(&mut out, ok, &text).is_err() {
            return Ok(());
        }
    }
}

/// One request: a worker does it as the JVM's user; its answer comes through a pipe.
fn serve(req: &Request) -> Result<String, String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the broker is single-threaded; the worker runs `work` and exits.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(r);
            let answer = work(req);
            let mut w = std::fs::File::from(w);
            let _ = match &answer {
                Ok(t) => write_answer(&mut w, true, t),
                Err(e) => write_answer(&mut w, false, e),
            };
            // SAFETY: leave without the broker's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let result = relay(r, req.timeout + Duration::from_secs(2));
            if result.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = waitpid(child, None);
            result
        }
    }
}

/// Read the worker's answer, giving up at `timeout`.
fn relay(r: OwnedFd, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut file = std::fs::File::from(r);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the JVM did not answer within {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let n = file.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        if buf.len() + n > MAX_ANSWER + 64 {
            return Err("the answer is too long".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (ok, text) = read_answer(&mut &buf[..])
        .map_err(|e| format!("the worker gave no answer ({e}): it died"))?;
    if ok { Ok(text) } else { Err(text) }
}

/// In the worker: check the process, become its user, ask.
fn work(req: &Request) -> Result<String, String> {
    let pid = req.pid;
    let stat =
        crate::procfs::read_process_stat(pid).ok_or_else(|| format!("process {pid} is gone"))?;
    if stat.starttime != req.start_time {
        return Err(format!(
            "process {pid} is not the one watched any more (its pid was reused)"
        ));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    let id = |field: &str| -> Option<u32> {
        crate::procfs::status_field(&status, field)?
            .split_whitespace()
            .nth(1)? // effective
            .parse()
            .ok()
    };
    let (uid, gid) = match (id("Uid"), id("Gid")) {
        (Some(u), Some(g)) => (u, g),
        _ => return Err(format!("process {pid}: no Uid/Gid in its status")),
    };
    // SAFETY: set*id and prctl with integer arguments; capset through privileges.
    unsafe {
        if libc::setgroups(1, &gid) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(format!(
                "becoming uid {uid} gid {gid} (the JVM's user): {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    // Another user's JVM: the uid change left no capability. A root JVM holds every
    // capability, so reading its /proc files takes CAP_SYS_PTRACE (what `jcmd` as root has).
    let keep: &[u32] = if uid == 0 {
        &[
            crate::preflight::cap::SYS_PTRACE,
            crate::preflight::cap::DAC_READ_SEARCH,
        ]
    } else {
        &[]
    };
    crate::privileges::keep_only(keep)?;
    let timeout = req.timeout;
    match req.ask {
        Ask::ThreadDump => probe_lang::java::thread_dump(pid, timeout)
            .map(|(_, reply)| reply.text)
            .map_err(|e| e.to_string()),
        Ask::PerfMap => probe_lang::java::write_perf_map(pid, timeout)
            .map(|p| p.display().to_string())
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(
            parse_request("dump 42 123456 5000\n"),
            Some(Request {
                ask: Ask::ThreadDump,
                pid: 42,
                start_time: 123456,
                timeout: Duration::from_secs(5),
            })
        );
        assert_eq!(parse_request("perfmap 42 1 10").unwrap().ask, Ask::PerfMap);
        for bad in [
            "",
            "dump",
            "dump 0 1 1",
            "dump -1 1 1",
            "dump 42 1",
            "dump 42 1 1 extra",
            "exec 42 1 1",
            "dump 42 x 1",
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_request("dump 1 1 999999999").unwrap().timeout,
            Duration::from_secs(120),
            "timeouts are capped"
        );
    }

    #[test]
    fn answers_round_trip_and_garbage_is_refused() {
        let mut buf = Vec::new();
        write_answer(&mut buf, true, "Full thread dump\n\"main\"").unwrap();
        assert_eq!(
            read_answer(&mut &buf[..]).unwrap(),
            (true, "Full thread dump\n\"main\"".to_string())
        );
        let mut buf = Vec::new();
        write_answer(&mut buf, false, "refused").unwrap();
        assert_eq!(
            read_answer(&mut &buf[..]).unwrap(),
            (false, "refused".into())
        );
        assert!(read_answer(&mut &b"ok 999999999999\n"[..]).is_err());
        assert!(read_answer(&mut &b"ok 10\nshort"[..]).is_err());
        assert!(read_answer(&mut &b"nonsense"[..]).is_err());
    }
}
