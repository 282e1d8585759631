//! What the sidecar tests and the packaging tests share: journald started standalone (systemd
//! is not PID 1 here), a cgroup standing in for a unit's, sd_notify's socket.
#![allow(dead_code)]

use std::{
    os::unix::{net::UnixDatagram, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use stallprobe_tests::*;

/// journald, started once (standalone) if nothing listens on the journal socket.
pub fn journald() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let sock = Path::new("/run/systemd/journal/socket");
        let alive = sock.exists()
            && UnixDatagram::unbound()
                .and_then(|s| {
                    s.send_to(b"SYSLOG_IDENTIFIER=stallprobe-tests\nMESSAGE=ping\n", sock)
                })
                .is_ok();
        if !alive {
            // Left running on purpose, as the machine's journal: later runs reuse it.
            #[allow(clippy::zombie_processes)]
            Command::new("/lib/systemd/systemd-journald")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start systemd-journald (package systemd)");
            let t = Instant::now();
            while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(sock.exists(), "journald did not create its socket");
        }
    });
}

/// Journal entries written by stallprobe about `pid`.
pub fn journal_entries(pid: u32) -> Vec<Value> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=stallprobe"])
        .arg(format!("STALLPROBE_PID={pid}"))
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn wait_for_entries(pid: u32, n: usize) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let e = journal_entries(pid);
        if e.len() >= n || t.elapsed() > Duration::from_secs(60) {
            return e;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A fresh cgroup v2 directory (removed on drop once empty).
pub struct Cgroup(pub PathBuf);

pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

impl Cgroup {
    /// Where systemd would put a system service named `unit`: `--unit` finds it there when
    /// systemd itself does not answer (it is not PID 1 on the test machines).
    pub fn for_unit(unit: &str) -> Cgroup {
        let slice = cgroup2_root().join("system.slice");
        let _ = std::fs::create_dir(&slice);
        let dir = slice.join(unit);
        let _ = std::fs::create_dir(&dir);
        Cgroup(dir)
    }

    /// Start `cmd` and move it into this cgroup (before it creates its threads: it waits for
    /// `--ready` output to be read only after the move).
    pub fn start(&self, bin: &Path, args: &[&str]) -> Child {
        let child = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(self.0.join("cgroup.procs"), child.id().to_string()).unwrap();
        child
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn term(c: &Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
}

pub fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// A notify socket like systemd's, to receive READY=1 and friends.
pub fn notify_socket() -> (UnixDatagram, PathBuf) {
    let path = std::env::temp_dir().join(format!("stallprobe-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let s = UnixDatagram::bind(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    (s, path)
}

pub fn recv_until(s: &UnixDatagram, needle: &str) -> String {
    try_recv_until(s, needle).unwrap_or_else(|| panic!("no {needle} on the notify socket"))
}

/// The first datagram holding `needle` within 60 s.
pub fn try_recv_until(s: &UnixDatagram, needle: &str) -> Option<String> {
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if let Ok(n) = s.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(needle) {
                return Some(m);
            }
        }
    }
    None
}
