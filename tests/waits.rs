//! "What is this fd": `stallprobe::waits::describe_fd` on real processes (root: it reads other
//! processes' /proc/PID/fd, fdinfo and network tables, and asks sock_diag).
//!
//! One workload, `fd_kinds`, holds one fd of each kind, with helper processes on the other ends
//! (see tests/workloads/c/fd_kinds.c). Each test starts its own.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use stallprobe::waits::{End, FdObject, Holder, Pipe, Socket, describe_fd};
use stallprobe_tests::*;

struct Kinds {
    w: Workload,
    file: PathBuf,
    fifo: PathBuf,
}

impl Kinds {
    fn start() -> Kinds {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = workload_dir().join("waits");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("file-{}-{n}.txt", std::process::id()));
        let fifo = dir.join(format!("fifo-{}-{n}", std::process::id()));
        let w = Workload::start(
            Command::new(build_c("fd_kinds")).arg(&file).arg(&fifo),
            Duration::from_secs(30),
        );
        Kinds { w, file, fifo }
    }

    fn pid(&self) -> u32 {
        self.w.pid()
    }

    fn n(&self, key: &str) -> u64 {
        self.w.fact(key).parse().unwrap()
    }

    /// Describe our fd `key` (a fact), print its summary, return it.
    fn describe(&self, key: &str) -> FdObject {
        self.describe_in(self.pid(), key, self.n(key))
    }

    fn describe_in(&self, pid: u32, what: &str, fd: u64) -> FdObject {
        let o = describe_fd(pid, fd)
            .unwrap_or_else(|| panic!("{what}: pid {pid} fd {fd} not described"));
        eprintln!("{what} (pid {pid} fd {fd}): {}", o.summary());
        o
    }
}

impl Drop for Kinds {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.fifo);
    }
}

#[track_caller]
fn socket(o: &FdObject) -> &Socket {
    match o {
        FdObject::Socket(s) => s,
        other => panic!("expected a socket, got {other:?}"),
    }
}

#[track_caller]
fn pipe(o: &FdObject) -> &Pipe {
    match o {
        FdObject::Pipe(p) => p,
        other => panic!("expected a pipe, got {other:?}"),
    }
}

fn holds(hs: &[Holder], pid: u32, fd: u64) -> bool {
    hs.iter().any(|h| h.pid == pid && h.fd == fd)
}

#[test]
fn tcp_client_to_a_server_that_never_answers() {
    let k = Kinds::start();
    let o = k.describe("tcp_fd");
    let s = socket(&o);
    let (server_port, client_port) = (k.n("tcp_server_port"), k.n("tcp_client_port"));
    assert_eq!(s.proto, "tcp");
    assert_eq!(
        s.local.as_deref(),
        Some(&*format!("127.0.0.1:{client_port}"))
    );
    assert_eq!(
        s.remote.as_deref(),
        Some(&*format!("127.0.0.1:{server_port}"))
    );
    assert_eq!(s.state.as_deref(), Some("ESTABLISHED"));
    assert_eq!((s.rx_queue, s.tx_queue), (Some(0), Some(0)));
    let peer = s.peer.as_ref().expect("the server is on this host");
    assert!(!peer.in_accept_queue);
    let server = k.n("tcp_server_pid") as u32;
    assert!(
        holds(&peer.holders, server, k.n("tcp_server_fd")),
        "{peer:?}"
    );
    let sum = o.summary();
    assert_eq!(
        sum,
        format!(
            "TCP 127.0.0.1:{client_port} → 127.0.0.1:{server_port} ESTABLISHED, 0 B queued, peer pid {server} (tcp_server) fd {}",
            k.n("tcp_server_fd")
        )
    );
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(json["type"], "socket");
    assert_eq!(json["state"], "ESTABLISHED");

    // And from the server's side: the client is us.
    let back = k.describe_in(server, "tcp_server_fd", k.n("tcp_server_fd"));
    let b = socket(&back);
    assert_eq!(
        b.local.as_deref(),
        Some(&*format!("127.0.0.1:{server_port}"))
    );
    assert!(
        holds(&b.peer.as_ref().unwrap().holders, k.pid(), k.n("tcp_fd")),
        "{b:?}"
    );
}

#[test]
fn tcp_connection_nobody_accepted() {
    let k = Kinds::start();
    let o = k.describe("pending_fd");
    let s = socket(&o);
    assert_eq!(s.state.as_deref(), Some("ESTABLISHED"));
    assert_eq!(
        s.remote.as_deref(),
        Some(&*format!("127.0.0.1:{}", k.n("pending_port")))
    );
    let peer = s.peer.as_ref().unwrap();
    assert!(peer.in_accept_queue, "{peer:?}");
    let server = k.n("tcp_server_pid") as u32;
    assert!(
        holds(&peer.holders, server, k.n("pending_listen_fd")),
        "{peer:?}"
    );
    assert!(
        o.summary()
            .contains(&format!("not accepted yet by pid {server} (tcp_server)")),
        "{}",
        o.summary()
    );
}

#[test]
fn pipe_whose_writer_exited() {
    let k = Kinds::start();
    let o = k.describe("dead_pipe_fd");
    let p = pipe(&o);
    assert_eq!(p.end, End::Read);
    assert!(p.no_writer, "{p:?}");
    assert!(!p.no_reader);
    assert!(p.holders.iter().all(|h| h.end == Some(End::Read)), "{p:?}");
    assert_eq!(p.queued, Some(3), "the writer's 3 bytes are still there");
    assert_eq!(
        o.summary(),
        format!(
            "pipe:[{}], writer gone (no process holds the write end), 3 B queued",
            p.inode
        )
    );
}

#[test]
fn pipe_with_a_live_writer() {
    let k = Kinds::start();
    let o = k.describe("live_pipe_fd");
    let p = pipe(&o);
    let producer = k.n("producer_pid") as u32;
    let fd = k.n("producer_fd");
    assert!(!p.no_writer);
    let h = p
        .holders
        .iter()
        .find(|h| h.pid == producer && h.fd == fd)
        .unwrap_or_else(|| panic!("producer not among {:?}", p.holders));
    assert_eq!(h.end, Some(End::Write));
    assert_eq!(h.comm, "producer");
    assert_eq!(
        o.summary(),
        format!(
            "pipe:[{}] written by pid {producer} (producer) fd {fd}",
            p.inode
        )
    );
    assert_eq!(
        serde_json::to_value(&o).unwrap()["holders"][0]["end"],
        "write"
    );
}

#[test]
fn unix_socketpair_across_two_processes() {
    let k = Kinds::start();
    let peer_pid = k.n("unix_peer_pid") as u32;
    let peer_fd = k.n("unix_peer_fd");
    let ours = k.describe("unix_fd");
    let theirs = k.describe_in(peer_pid, "unix_peer_fd", peer_fd);
    let (a, b) = (socket(&ours), socket(&theirs));
    assert_eq!(a.proto, "unix");
    assert_eq!(a.unix_type.as_deref(), Some("stream"));
    assert_eq!(a.state.as_deref(), Some("CONNECTED"));
    let (pa, pb) = (a.peer.as_ref().unwrap(), b.peer.as_ref().unwrap());
    assert_eq!(pa.inode, Some(b.inode), "{pa:?}");
    assert_eq!(pb.inode, Some(a.inode), "{pb:?}");
    assert!(holds(&pa.holders, peer_pid, peer_fd), "{pa:?}");
    assert!(holds(&pb.holders, k.pid(), k.n("unix_fd")), "{pb:?}");
    assert_eq!(
        ours.summary(),
        format!("unix stream CONNECTED, 0 B queued, peer pid {peer_pid} (unix_peer) fd {peer_fd}")
    );
}

#[test]
fn unix_socket_whose_peer_exited() {
    let k = Kinds::start();
    let peer_pid = k.n("unix_peer_pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(peer_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Killed, and its files closed (it stays a zombie until fd_kinds reaps it: never).
    let t = Instant::now();
    while std::fs::read_dir(format!("/proc/{peer_pid}/fd")).is_ok_and(|d| d.count() > 0) {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = k.describe("unix_fd");
    let s = socket(&o);
    let peer = s.peer.as_ref().unwrap();
    assert!(peer.holders.is_empty(), "{peer:?}");
    assert!(
        o.summary().contains("peer closed") || o.summary().contains("held by no process"),
        "{}",
        o.summary()
    );
}

#[test]
fn fifo_with_a_writer() {
    let k = Kinds::start();
    let o = k.describe("fifo_fd");
    let p = pipe(&o);
    assert_eq!(p.path.as_deref(), Some(k.fifo.to_str().unwrap()));
    let writer = k.n("fifo_writer_pid") as u32;
    assert!(
        p.holders
            .iter()
            .any(|h| h.pid == writer && h.end == Some(End::Write)),
        "{p:?}"
    );
    assert_eq!(p.queued, Some(10));
    assert!(
        o.summary()
            .contains(&format!("written by pid {writer} (fifo_writer)"))
    );
}

#[test]
fn epoll_lists_its_items() {
    let k = Kinds::start();
    let o = k.describe("epoll_fd");
    let FdObject::Epoll { items } = &o else {
        panic!("{o:?}")
    };
    let fds: Vec<u64> = items.iter().map(|i| i.fd).collect();
    let (efd, tfd, lfd) = (k.n("eventfd_fd"), k.n("timerfd_fd"), k.n("listen_fd"));
    assert_eq!(fds, vec![efd, tfd, lfd]);
    let obj = |i: usize| items[i].object.as_deref().unwrap();
    assert_eq!(obj(0), &FdObject::Eventfd { count: 0 });
    match obj(1) {
        FdObject::Timerfd {
            clockid,
            interval_ms,
            ..
        } => {
            assert_eq!(clockid, "MONOTONIC");
            assert_eq!(*interval_ms, Some(20.0));
        }
        other => panic!("{other:?}"),
    }
    let l = socket(obj(2));
    assert_eq!(l.state.as_deref(), Some("LISTEN"));
    assert_eq!(
        l.local.as_deref(),
        Some(&*format!("0.0.0.0:{}", k.n("listen_port")))
    );
    assert_eq!(items[0].events, vec!["IN", "ERR", "HUP"]);
    assert_eq!(items[2].events, vec!["IN", "ERR", "HUP", "RDHUP", "ET"]);
    assert_eq!(
        o.summary(),
        format!(
            "epoll on 3 fds: eventfd (count 0), timerfd every 20ms, TCP 0.0.0.0:{} LISTEN",
            k.n("listen_port")
        )
    );
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(json["type"], "epoll");
    // The cost of one call (one pass over every process's fds included).
    let t = Instant::now();
    for _ in 0..10 {
        describe_fd(k.pid(), k.n("epoll_fd")).unwrap();
    }
    eprintln!(
        "describe_fd(epoll with 3 items): {:?} per call, {} processes on the host",
        t.elapsed() / 10,
        std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())))
            .count()
    );
    assert_eq!(json["items"][1]["object"]["type"], "timerfd");
}

#[test]
fn epoll_item_whose_fd_was_closed() {
    let k = Kinds::start();
    let o = k.describe("stale_epoll_fd");
    let FdObject::Epoll { items } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(items.len(), 1);
    let stale = k.n("stale_fd");
    assert_eq!(items[0].fd, stale);
    assert!(items[0].object.is_none(), "{:?}", items[0]);
    let note = items[0].note.as_deref().unwrap_or("");
    // Here the number was reused right away (for file_fd): the note says which case it is.
    if k.n("file_fd") == stale {
        assert!(note.contains("now refers to another file"), "{note}");
    } else {
        assert!(
            note.starts_with(&format!("fd {stale} was closed")),
            "{note}"
        );
    }
    eprintln!("note: {note}");
    assert_eq!(
        o.summary(),
        format!("epoll on 1 fd: fd {stale} (closed, file still registered)")
    );
}

#[test]
fn regular_file_signalfd_and_the_rest() {
    let k = Kinds::start();
    let o = k.describe("file_fd");
    assert_eq!(
        o,
        FdObject::File {
            path: k.file.to_str().unwrap().to_string(),
            pos: 42
        }
    );
    assert_eq!(o.summary(), format!("{}, offset 42", k.file.display()));

    let o = k.describe("signalfd_fd");
    assert_eq!(
        o,
        FdObject::Signalfd {
            signals: vec!["SIGUSR1".into(), "SIGUSR2".into()]
        }
    );
    assert_eq!(o.summary(), "signalfd for SIGUSR1, SIGUSR2");

    // The eventfd and timerfd on their own; stdout, a pipe to this test.
    let e = k.describe("eventfd_fd");
    assert_eq!(e.summary(), "eventfd (count 0)");
    let t = k.describe("timerfd_fd");
    assert!(
        t.summary().starts_with("timerfd every 20ms"),
        "{}",
        t.summary()
    );
    let out = k.describe_in(k.pid(), "stdout", 1);
    let p = pipe(&out);
    assert_eq!(p.end, End::Write);
    assert!(
        p.holders
            .iter()
            .any(|h| h.pid == std::process::id() && h.end == Some(End::Read)),
        "this test reads the workload's stdout: {p:?}"
    );
    assert_eq!(describe_fd(k.pid(), 999), None);
}

/// Processes that exit while being described: partial answers or `None`, never a panic.
#[test]
fn processes_exiting_mid_scan() {
    require_root();
    let start = Instant::now();
    let mut described = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let mut kids: Vec<std::process::Child> = (0..8)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "exec 3</etc/hostname; sleep 0.0$((RANDOM % 5))"])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for _ in 0..5 {
            for c in &kids {
                for fd in 0..4 {
                    if let Some(o) = describe_fd(c.id(), fd) {
                        let _ = o.summary();
                        described += 1;
                    }
                }
            }
        }
        for c in &mut kids {
            let _ = c.wait();
        }
        for c in &kids {
            assert_eq!(describe_fd(c.id(), 0), None, "reaped: nothing to describe");
        }
    }
    assert!(described > 0);
}

/// Sockets in another network namespace: the tables come from /proc/PID/net, the unix peer
/// from sock_diag asked inside that namespace.
#[test]
fn sockets_in_another_network_namespace() {
    require_root();
    let path = workload_dir()
        .join("waits")
        .join(format!("netns-{}.sock", std::process::id()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = python_script("fd_netns");
    let w = Workload::start(
        Command::new("unshare")
            .args(["--net", "--", "sh", "-c"])
            .arg(format!(
                "ip link set lo up && exec python3 {} {}",
                script.display(),
                path.display()
            )),
        Duration::from_secs(30),
    );
    let pid = w.pid();
    let n = |k: &str| -> u64 { w.fact(k).parse().unwrap() };
    let d = |k: &str| {
        let o = describe_fd(pid, n(k)).unwrap_or_else(|| panic!("{k} not described"));
        eprintln!("{k} (pid {pid}, own netns): {}", o.summary());
        o
    };
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the workload runs in a network namespace of its own"
    );

    let o = d("tcp6_fd");
    let s = socket(&o);
    assert_eq!(s.proto, "tcp6");
    assert_eq!(
        s.local.as_deref(),
        Some(&*format!("[::1]:{}", n("tcp6_client_port")))
    );
    assert_eq!(
        s.remote.as_deref(),
        Some(&*format!("[::1]:{}", n("tcp6_port")))
    );
    assert_eq!(s.state.as_deref(), Some("ESTABLISHED"));
    assert!(
        holds(&s.peer.as_ref().unwrap().holders, pid, n("tcp6_peer_fd")),
        "{s:?}"
    );

    let o = d("udp6_fd");
    let s = socket(&o);
    assert_eq!(s.proto, "udp6");
    assert_eq!(
        s.local.as_deref(),
        Some(&*format!("[::1]:{}", n("udp6_port")))
    );
    assert_eq!(s.remote.as_deref(), Some("[::1]:9"));
    assert_eq!(s.state, None);

    let o = d("client_fd");
    let c = socket(&o);
    assert_eq!(c.remote.as_deref(), Some(path.to_str().unwrap()), "{c:?}");
    assert_eq!(
        c.tx_queue,
        Some(5),
        "5 bytes sent, not read by the server: {c:?}"
    );
    let peer = c.peer.as_ref().unwrap();
    assert!(peer.note.is_none(), "{peer:?}");
    assert!(holds(&peer.holders, pid, n("server_fd")), "{peer:?}");
    let o = d("server_fd");
    let s = socket(&o);
    assert_eq!(s.path.as_deref(), Some(path.to_str().unwrap()));
    assert_eq!(s.rx_queue, Some(5));
    assert!(
        holds(&s.peer.as_ref().unwrap().holders, pid, n("client_fd")),
        "{s:?}"
    );
    drop(w);
    let _ = std::fs::remove_file(&path);
}
