//! A client of HotSpot's attach mechanism on Linux, as `jcmd` and `jstack` use it.
//!
//! The JVM listens on the unix socket `/tmp/.java_pid<NSPID>` (its own /tmp, in its mount
//! namespace) once its attach listener runs. It starts the listener when it gets SIGQUIT and
//! finds a file `.attach_pid<NSPID>` in its cwd or /tmp; without that file SIGQUIT only makes
//! it print a thread dump on its stdout. A request is `1\0<cmd>\0<arg0>\0<arg1>\0<arg2>\0`;
//! the answer is a status line (`0` = ok) and the command's output, then EOF.
//!
//! What this touches in the target, only when the socket is not there yet: it creates (as
//! the caller, normally root) the empty file `.attach_pid<NSPID>` in the target's cwd (or, if
//! that fails, its /tmp), sends it one SIGQUIT, and removes the file again. The JVM then keeps
//! an "Attach Listener" thread and the socket `/tmp/.java_pid<NSPID>` for its lifetime.
//! It refuses, before signalling, a JVM that does not catch SIGQUIT (e.g. `-Xrs`: the signal
//! would kill it) and one started with `-XX:+DisableAttachMechanism`.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most output kept from one command (a thread dump of 10 000 threads is ~10 MiB).
pub const MAX_OUTPUT: usize = 16 << 20;

/// How long to wait for the socket after SIGQUIT, at most (within the caller's timeout).
pub const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// What a command answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachReply {
    pub text: String,
    /// The output was longer than [`MAX_OUTPUT`] and was cut there.
    pub truncated: bool,
}

/// Why a command could not be run. Each says why in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// No such process, or /proc not readable.
    NoProcess(String),
    /// Not a HotSpot JVM (no libjvm.so mapped, or another JVM's mechanism).
    NotHotSpot(String),
    /// Attaching was refused before anything was sent: attach disabled, or SIGQUIT would kill it.
    Refused(String),
    /// The socket did not appear after SIGQUIT.
    NoSocket(String),
    /// Connecting, sending or reading failed.
    Io(String),
    /// The JVM did not answer within the timeout.
    Timeout(String),
    /// The JVM answered with a non-zero status.
    Command { status: i32, message: String },
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::NoProcess(s)
            | AttachError::NotHotSpot(s)
            | AttachError::Refused(s)
            | AttachError::NoSocket(s)
            | AttachError::Io(s)
            | AttachError::Timeout(s) => f.write_str(s),
            AttachError::Command { status, message } => {
                write!(f, "the JVM answered status {status}: {}", message.trim())
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// What /proc says about the target, as far as attaching needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    /// The pid in the target's own pid namespace (last NSpid field).
    pub ns_pid: u32,
    /// SIGQUIT is caught (SigCgt bit 3).
    pub catches_sigquit: bool,
}

/// Parse the NSpid and SigCgt lines of `/proc/PID/status`.
pub fn parse_status(pid: u32, status: &str) -> Target {
    let mut t = Target {
        pid,
        ns_pid: pid,
        catches_sigquit: false,
    };
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("NSpid:") {
            if let Some(last) = v.split_whitespace().last().and_then(|s| s.parse().ok()) {
                t.ns_pid = last;
            }
        } else if let Some(v) = line.strip_prefix("SigCgt:") {
            let mask = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            t.catches_sigquit = mask & (1 << (3 - 1)) != 0;
        }
    }
    t
}

/// Why the command line or environment disables attaching, if they do.
pub fn attach_disabled(cmdline: &[u8], environ: &[u8]) -> Option<String> {
    const FLAG: &str = "-XX:+DisableAttachMechanism";
    let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
    let last = args.rfind(|a| a.contains("DisableAttachMechanism"));
    if let Some(a) = last
        && a.contains(FLAG)
    {
        return Some(format!(
            "the JVM was started with {FLAG}: attaching is disabled"
        ));
    }
    for var in environ.split(|&b| b == 0).map(String::from_utf8_lossy) {
        for name in ["JAVA_TOOL_OPTIONS=", "JDK_JAVA_OPTIONS=", "_JAVA_OPTIONS="] {
            if let Some(v) = var.strip_prefix(name)
                && v.contains(FLAG)
            {
                return Some(format!(
                    "the JVM has {FLAG} in {}: attaching is disabled",
                    name.trim_end_matches('=')
                ));
            }
        }
    }
    None
}

/// Run attach command `cmd` (`threaddump`, `jcmd`, `properties`, ...) with up to three
/// arguments in JVM `pid` (as seen from here), all within `timeout`.
pub fn attach_command(
    pid: u32,
    cmd: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<AttachReply, AttachError> {
    let deadline = Instant::now() + timeout;
    if args.len() > 3 {
        return Err(AttachError::Io(format!(
            "the attach protocol takes at most 3 arguments, got {}",
            args.len()
        )));
    }
    if [cmd].iter().chain(args).any(|s| s.contains('\0')) {
        return Err(AttachError::Io(
            "a NUL byte in the command or an argument".into(),
        ));
    }
    let proc_ = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_.join("status"))
        .map_err(|e| AttachError::NoProcess(format!("process {pid}: {e}")))?;
    let target = parse_status(pid, &status);
    check_hotspot(pid, &proc_)?;
    let socket = proc_.join(format!("root/tmp/.java_pid{}", target.ns_pid));
    if !is_socket(&socket) {
        start_listener(&target, &proc_, &socket, deadline)?;
    }
    let stream = connect(&socket)?;
    exchange(stream, cmd, args, deadline)
}

fn check_hotspot(pid: u32, proc_: &Path) -> Result<(), AttachError> {
    let maps = std::fs::read_to_string(proc_.join("maps"))
        .map_err(|e| AttachError::NoProcess(format!("process {pid}: maps: {e}")))?;
    if maps.contains("/libj9vm") {
        return Err(AttachError::NotHotSpot(format!(
            "process {pid} is an OpenJ9 JVM, whose attach mechanism is not HotSpot's"
        )));
    }
    if !maps.contains("/libjvm.so") {
        return Err(AttachError::NotHotSpot(format!(
            "process {pid} has no libjvm.so mapped: not a HotSpot JVM (or not started yet)"
        )));
    }
    Ok(())
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Removes the trigger file when dropped.
struct Trigger(PathBuf);

impl Drop for Trigger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start_listener(
    t: &Target,
    proc_: &Path,
    socket: &Path,
    deadline: Instant,
) -> Result<(), AttachError> {
    let pid = t.pid;
    let cmdline = std::fs::read(proc_.join("cmdline")).unwrap_or_default();
    let environ = std::fs::read(proc_.join("environ")).unwrap_or_default();
    if let Some(why) = attach_disabled(&cmdline, &environ) {
        return Err(AttachError::Refused(why));
    }
    if !t.catches_sigquit {
        return Err(AttachError::Refused(format!(
            "process {pid} does not catch SIGQUIT (started with -Xrs, or still starting): sending it would kill the JVM"
        )));
    }
    let name = format!(".attach_pid{}", t.ns_pid);
    let cwd_file = proc_.join("cwd").join(&name);
    let tmp_file = proc_.join("root/tmp").join(&name);
    let trigger = match std::fs::File::create(&cwd_file) {
        Ok(_) => Trigger(cwd_file),
        Err(e1) => match std::fs::File::create(&tmp_file) {
            Ok(_) => Trigger(tmp_file),
            Err(e2) => {
                return Err(AttachError::Io(format!(
                    "cannot create {name} in the JVM's cwd ({e1}) or /tmp ({e2})"
                )));
            }
        },
    };
    // SAFETY: kill(2) with a pid and a signal number has no memory effects here.
    if unsafe { nix::libc::kill(pid as i32, nix::libc::SIGQUIT) } != 0 {
        return Err(AttachError::NoProcess(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let signalled = Instant::now();
    let until = deadline.min(signalled + SOCKET_WAIT);
    let mut delay = Duration::from_millis(20);
    loop {
        if is_socket(socket) {
            drop(trigger);
            return Ok(());
        }
        let now = Instant::now();
        if now >= until {
            drop(trigger);
            return Err(AttachError::NoSocket(format!(
                "the JVM {pid} did not open its attach socket {} within {:.1} s of SIGQUIT: it is not responding (paused at a safepoint, in GC, stopped), or attach is disabled; SIGQUIT made it print a thread dump on its stdout",
                socket.display(),
                signalled.elapsed().as_secs_f64()
            )));
        }
        std::thread::sleep(delay.min(until - now));
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Connect to the socket; a path too long for `sun_path` is reached through the directory's
/// file descriptor (`/proc/self/fd/N/.java_pidX`).
fn connect(socket: &Path) -> Result<UnixStream, AttachError> {
    let err = |e: std::io::Error| {
        AttachError::Io(format!(
            "cannot connect to the JVM's attach socket {}: {e}",
            socket.display()
        ))
    };
    let err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => AttachError::Io(format!(
            "nobody listens on {}: a socket left by an earlier JVM with this pid? (remove it and retry)",
            socket.display()
        )),
        _ => err(e),
    };
    if socket.as_os_str().len() < 100 {
        return UnixStream::connect(socket).map_err(err);
    }
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let file = socket.file_name().unwrap_or_default();
    let d = std::fs::File::open(dir).map_err(err)?;
    use std::os::fd::AsRawFd;
    let short = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(file);
    UnixStream::connect(short).map_err(err)
}

fn exchange(
    mut s: UnixStream,
    cmd: &str,
    args: &[&str],
    deadline: Instant,
) -> Result<AttachReply, AttachError> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| AttachError::Timeout("the JVM did not answer in time".into()))
    };
    let mut req = Vec::new();
    for part in ["1", cmd]
        .into_iter()
        .chain((0..3).map(|i| args.get(i).copied().unwrap_or("")))
    {
        req.extend_from_slice(part.as_bytes());
        req.push(0);
    }
    s.set_write_timeout(Some(left()?))
        .and_then(|_| s.write_all(&req))
        .map_err(|e| AttachError::Io(format!("sending the request: {e}")))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut truncated = false;
    loop {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| AttachError::Io(e.to_string()))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = MAX_OUTPUT + 16 - out.len();
                if n > room {
                    out.extend_from_slice(&buf[..room]);
                    truncated = true;
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AttachError::Timeout(format!(
                    "the JVM did not finish answering `{cmd}` in time ({} bytes so far)",
                    out.len()
                )));
            }
            Err(e) => return Err(AttachError::Io(format!("reading the answer: {e}"))),
        }
    }
    if out.is_empty() {
        return Err(AttachError::Io(
            "the JVM closed the connection without answering (it answers only clients running as its own user or as root)".into(),
        ));
    }
    let text = String::from_utf8_lossy(&out);
    let (status, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let status: i32 = status.trim().parse().map_err(|_| {
        AttachError::Io(format!(
            "the answer does not start with a status line: {:?}",
            text.chars().take(80).collect::<String>()
        ))
    })?;
    if status != 0 {
        return Err(AttachError::Command {
            status,
            message: rest.chars().take(4096).collect(),
        });
    }
    let mut text = rest.to_string();
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        truncated = true;
    }
    Ok(AttachReply { text, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let t = parse_status(
            4242,
            "Name:\tjava\nNSpid:\t4242\t7\nSigBlk:\t0\nSigCgt:\t2000000181005ccf\n",
        );
        assert_eq!(t.ns_pid, 7);
        assert!(t.catches_sigquit);
        let t = parse_status(9, "NSpid:\t9\nSigCgt:\t0000000000004002\n");
        assert_eq!(t.ns_pid, 9);
        assert!(!t.catches_sigquit);
        assert_eq!(parse_status(5, "").ns_pid, 5);
    }

    #[test]
    fn disabled_attach_is_seen_in_cmdline_and_environment() {
        let cmd = b"java\0-XX:+DisableAttachMechanism\0Main\0";
        assert!(attach_disabled(cmd, b"").is_some());
        let cmd = b"java\0-XX:+DisableAttachMechanism\0-XX:-DisableAttachMechanism\0Main\0";
        assert!(attach_disabled(cmd, b"").is_none(), "the last flag wins");
        assert!(
            attach_disabled(
                b"java\0Main\0",
                b"HOME=/\0JAVA_TOOL_OPTIONS=-Xmx1g -XX:+DisableAttachMechanism\0"
            )
            .unwrap()
            .contains("JAVA_TOOL_OPTIONS")
        );
        assert!(attach_disabled(b"java\0Main\0", b"HOME=/\0").is_none());
    }

    #[test]
    fn not_a_jvm() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let r = attach_command(child.id(), "threaddump", &[], Duration::from_secs(2));
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(r, Err(AttachError::NotHotSpot(_))), "{r:?}");
        assert!(matches!(
            attach_command(u32::MAX - 1, "threaddump", &[], Duration::from_secs(1)),
            Err(AttachError::NoProcess(_))
        ));
    }
}
