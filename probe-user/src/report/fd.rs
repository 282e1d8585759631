//! What an fd of a process is (sockets, pipes, epoll sets, timers, files), as the report says
//! it: the types serialized as JSON (`"type": "socket"` ...) and their one-line summaries for
//! people. [`crate::waits`] finds them out.

use serde::Serialize;

use super::{format_bytes, format_ms};

/// What an fd of a process is, for people ([`FdObject::summary`]) and for JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FdObject {
    /// TCP/UDP (IPv4 and IPv6) and unix sockets.
    Socket(Socket),
    /// A pipe, or a FIFO (`path` set).
    Pipe(Pipe),
    /// The counter (`eventfd-count`).
    Eventfd { count: u64 },
    Timerfd {
        /// `MONOTONIC`, `REALTIME`, `BOOTTIME` ...
        clockid: String,
        /// Expirations not read yet.
        ticks: u64,
        /// Time to the next expiration (`None`: disarmed, or expired and not read yet).
        next_ms: Option<f64>,
        /// The period (`None`: one-shot).
        interval_ms: Option<f64>,
    },
    /// The signals it accepts (`SIGTERM` ...).
    Signalfd { signals: Vec<String> },
    /// The interest list, each target fd described one level deep.
    Epoll { items: Vec<EpollItem> },
    /// A file (or directory, or device) by path, with the fd's offset.
    File { path: String, pos: u64 },
    /// A terminal (`/dev/pts/N`, `/dev/ttyN`, `/dev/console`).
    Tty { path: String },
    /// Anything else: the link text (`anon_inode:inotify`, `anon_inode:[pidfd]` ...).
    Other { link: String },
}

/// A socket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Socket {
    /// `tcp`, `tcp6`, `udp`, `udp6` (the /proc/net table it is in), `unix`; for a socket in
    /// none of these tables its protocol as the kernel names it (`netlink`, `packet`, `raw`
    /// ...) or `unknown`.
    pub proto: String,
    pub inode: u64,
    /// The local address (`127.0.0.1:41234`, `[::1]:8080`); unix: the bound name.
    pub local: Option<String>,
    /// The remote address; unix: the other end's bound name (the server's path).
    pub remote: Option<String>,
    /// TCP state (`ESTABLISHED`, `LISTEN` ...); unix: `CONNECTED`, `LISTEN`, `UNCONNECTED`.
    pub state: Option<String>,
    /// Bytes received and not read yet (for a listener: connections waiting for accept()).
    pub rx_queue: Option<u64>,
    /// Bytes sent and not yet acknowledged (TCP) or read by the other end (unix: what the
    /// peer has queued to read); for a listener, the backlog limit.
    pub tx_queue: Option<u64>,
    /// Unix: `stream`, `dgram`, `seqpacket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_type: Option<String>,
    /// Unix: the bound path (`@name` for the abstract namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The other end when known (connected sockets); `None` for listeners, unconnected
    /// sockets and connections to other hosts.
    pub peer: Option<SocketPeer>,
}

/// The other end of a connected socket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SocketPeer {
    /// The other end's socket inode (with `in_accept_queue`, the listener's).
    pub inode: Option<u64>,
    /// The processes holding it (pid, comm, fd).
    pub holders: Vec<Holder>,
    /// TCP: the connection is complete but waits in a listener's accept queue: nobody
    /// accept()ed it yet. `inode` and `holders` are then the listener's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_accept_queue: bool,
    /// Why the other end is not known (`peer unknown: ...`), or that it was closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A pipe or FIFO.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pipe {
    pub inode: u64,
    /// A FIFO's path (`None` for an anonymous pipe).
    pub path: Option<String>,
    /// The end this fd is.
    pub end: End,
    /// Every other fd on the host open on this pipe: pid, comm, fd, end.
    pub holders: Vec<Holder>,
    /// No process holds the write end (all writers exited or closed it).
    pub no_writer: bool,
    /// No process holds the read end.
    pub no_reader: bool,
    /// Bytes in the pipe now.
    pub queued: Option<u64>,
    /// Its capacity (64 KiB by default).
    pub capacity: Option<u64>,
    /// The FIFO's device (holders are matched by device and inode).
    #[serde(skip)]
    pub dev: u64,
}

/// One entry of an epoll interest list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpollItem {
    /// The fd number it was registered with.
    pub fd: u64,
    /// The events asked for, decoded: `IN`, `OUT`, `RDHUP`, `ET`, `ONESHOT` ... (the kernel
    /// adds `ERR` and `HUP` to every item).
    pub events: Vec<String>,
    #[serde(serialize_with = "super::ser_hex")]
    pub data: u64,
    /// The inode of the registered file.
    pub ino: u64,
    /// What the fd is (not described for items past the first 64, nor inside a nested epoll).
    pub object: Option<Box<FdObject>>,
    /// E.g. that the fd was closed while the file stays registered (still open elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A process holding an fd on the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// The process's name (`/proc/PID/comm`), `?` when it just exited.
    pub comm: String,
    pub fd: u64,
    /// For pipes and FIFOs: which end this fd is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
}

/// Which end of a pipe (or which way a file is open) from the `flags:` access mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    Read,
    Write,
    /// Open O_RDWR (a FIFO can be): reads and writes.
    Both,
}

impl End {
    pub fn from_flags(flags: u32) -> End {
        match flags & 0o3 {
            0 => End::Read,
            1 => End::Write,
            _ => End::Both,
        }
    }
    pub fn reads(self) -> bool {
        self != End::Write
    }
    pub fn writes(self) -> bool {
        self != End::Read
    }
    pub fn as_str(self) -> &'static str {
        match self {
            End::Read => "read",
            End::Write => "write",
            End::Both => "read/write",
        }
    }
}

/// Holders / items named in a summary before "and N more".
const SUMMARY_MAX: usize = 3;
const EPOLL_SUMMARY_MAX: usize = 5;

// ---- summaries -------------------------------------------------------------------------------

impl FdObject {
    /// One short line: `TCP 127.0.0.1:41234 → 127.0.0.1:8080 ESTABLISHED, 0 B queued`,
    /// `pipe:[123], writer gone (no process holds the write end)`, `epoll on 3 fds: ...`.
    pub fn summary(&self) -> String {
        match self {
            FdObject::Socket(s) => socket_summary(s, true),
            FdObject::Pipe(p) => pipe_summary(p, true),
            FdObject::Eventfd { count } => format!("eventfd (count {count})"),
            FdObject::Timerfd {
                clockid,
                ticks,
                next_ms,
                interval_ms,
            } => {
                let mut s = timer_summary(clockid, *ticks, *next_ms, *interval_ms);
                if *ticks > 0 && (next_ms.is_some() || interval_ms.is_some()) {
                    s.push_str(", expired, not read yet");
                }
                s
            }
            FdObject::Signalfd { signals } => {
                if signals.is_empty() {
                    "signalfd for no signals".into()
                } else {
                    format!("signalfd for {}", signals.join(", "))
                }
            }
            FdObject::Epoll { items } => {
                let n = items.len();
                let head = format!("epoll on {n} fd{}", if n == 1 { "" } else { "s" });
                if n == 0 {
                    return head;
                }
                let mut parts: Vec<String> = items
                    .iter()
                    .take(EPOLL_SUMMARY_MAX)
                    .map(|i| match &i.object {
                        Some(o) => o.compact(),
                        None if i.note.is_some() => {
                            format!("fd {} (closed, file still registered)", i.fd)
                        }
                        None => format!("fd {}", i.fd),
                    })
                    .collect();
                if n > EPOLL_SUMMARY_MAX {
                    parts.push(format!("and {} more", n - EPOLL_SUMMARY_MAX));
                }
                format!("{head}: {}", parts.join(", "))
            }
            FdObject::File { path, pos } => format!("{path}, offset {pos}"),
            FdObject::Tty { path } => format!("terminal {path}"),
            FdObject::Other { link } => link.clone(),
        }
    }

    /// A shorter form without commas, for the items of an epoll summary.
    fn compact(&self) -> String {
        match self {
            FdObject::Socket(s) => socket_summary(s, false),
            FdObject::Pipe(p) => pipe_summary(p, false),
            FdObject::Timerfd {
                clockid,
                ticks,
                next_ms,
                interval_ms,
            } => timer_summary(clockid, *ticks, *next_ms, *interval_ms),
            FdObject::Signalfd { signals } => format!("signalfd ({})", signals.join(" ")),
            FdObject::Epoll { items } => format!("epoll on {} fds", items.len()),
            FdObject::File { path, .. } => path.clone(),
            other => other.summary(),
        }
    }
}

fn timer_summary(clock: &str, ticks: u64, next: Option<f64>, interval: Option<f64>) -> String {
    let mut s = "timerfd".to_string();
    if clock != "MONOTONIC" {
        s.push_str(&format!(" ({clock})"));
    }
    match (interval, next) {
        (Some(i), _) => s.push_str(&format!(" every {}", format_ms(i))),
        (None, Some(n)) => s.push_str(&format!(" once, in {}", format_ms(n))),
        (None, None) if ticks > 0 => s.push_str(" expired, not read yet"),
        (None, None) => s.push_str(" disarmed"),
    }
    s
}

/// `pid 42 (server) fd 5`, `pid 42 (server) fds 5, 7; pid 43 (x) fd 3`, `... and 2 more`.
fn holders_text(hs: &[&Holder]) -> String {
    let mut by_pid: Vec<(u32, &str, Vec<u64>)> = Vec::new();
    for h in hs {
        match by_pid.iter_mut().find(|(p, _, _)| *p == h.pid) {
            Some((_, _, fds)) => fds.push(h.fd),
            None => by_pid.push((h.pid, &h.comm, vec![h.fd])),
        }
    }
    let n = by_pid.len();
    let mut parts: Vec<String> = by_pid
        .into_iter()
        .take(SUMMARY_MAX)
        .map(|(pid, comm, fds)| {
            let list: Vec<String> = fds.iter().map(u64::to_string).collect();
            let fd_word = if fds.len() == 1 { "fd" } else { "fds" };
            format!("pid {pid} ({comm}) {fd_word} {}", list.join(" "))
        })
        .collect();
    if n > SUMMARY_MAX {
        parts.push(format!("and {} more processes", n - SUMMARY_MAX));
    }
    parts.join("; ")
}

fn socket_summary(s: &Socket, full: bool) -> String {
    let mut out = match s.proto.as_str() {
        "tcp" | "tcp6" | "udp" | "udp6" => {
            let mut o = format!(
                "{} {}",
                if s.proto.starts_with("tcp") {
                    "TCP"
                } else {
                    "UDP"
                },
                s.local.as_deref().unwrap_or("?")
            );
            if let Some(r) = &s.remote {
                o.push_str(&format!(" → {r}"));
            }
            if let Some(st) = &s.state {
                o.push(' ');
                o.push_str(st);
            }
            o
        }
        "unix" => {
            let mut o = format!("unix {}", s.unix_type.as_deref().unwrap_or("socket"));
            if let Some(p) = &s.path {
                o.push_str(&format!(" {p}"));
            }
            if let Some(r) = &s.remote {
                o.push_str(&format!(" → {r}"));
            }
            if let Some(st) = &s.state {
                o.push(' ');
                o.push_str(st);
            }
            o
        }
        proto => format!("socket:[{}] ({proto})", s.inode),
    };
    if !full {
        return out;
    }
    let listening = s.state.as_deref() == Some("LISTEN");
    if listening {
        match s.rx_queue {
            Some(n) if n > 0 => out.push_str(&format!(
                ", {n} connection{} waiting to be accepted",
                if n == 1 { "" } else { "s" }
            )),
            _ => {}
        }
    } else if let Some(rx) = s.rx_queue {
        // (unix: nothing is waiting at a peer that is gone)
        let tx = s.tx_queue.unwrap_or(0);
        if rx == 0 && tx == 0 {
            out.push_str(", 0 B queued");
        } else {
            let mut q = Vec::new();
            if rx > 0 {
                q.push(format!("{} received, not read", format_bytes(rx)));
            }
            if tx > 0 {
                let what = match s.proto.as_str() {
                    "tcp" | "tcp6" => "sent, not acknowledged",
                    "unix" => "sent, not read by the peer",
                    _ => "not sent yet",
                };
                q.push(format!("{} {what}", format_bytes(tx)));
            }
            out.push_str(&format!(", {}", q.join(", ")));
        }
    }
    if let Some(p) = &s.peer {
        let hs: Vec<&Holder> = p.holders.iter().collect();
        if p.in_accept_queue {
            match (hs.is_empty(), p.inode) {
                (false, _) => out.push_str(&format!(
                    ", not accepted yet by {} (listening)",
                    holders_text(&hs)
                )),
                (true, Some(i)) => {
                    out.push_str(&format!(", not accepted yet by listener socket:[{i}]"))
                }
                (true, None) => out.push_str(", not accepted yet"),
            }
        } else if !hs.is_empty() {
            out.push_str(&format!(", peer {}", holders_text(&hs)));
        } else if let Some(n) = &p.note {
            out.push_str(&format!(", {n}"));
        } else if let Some(i) = p.inode {
            out.push_str(&format!(", peer socket:[{i}] held by no process"));
        }
    }
    out
}

fn pipe_summary(p: &Pipe, full: bool) -> String {
    let name = match &p.path {
        Some(path) => format!("fifo {path}"),
        None => format!("pipe:[{}]", p.inode),
    };
    let writers: Vec<&Holder> = p
        .holders
        .iter()
        .filter(|h| h.end.is_some_and(End::writes))
        .collect();
    let readers: Vec<&Holder> = p
        .holders
        .iter()
        .filter(|h| h.end.is_some_and(End::reads))
        .collect();
    if !full {
        return match (p.no_writer, p.no_reader) {
            (true, _) => format!("{name} (writer gone)"),
            (_, true) => format!("{name} (reader gone)"),
            _ => name,
        };
    }
    let mut out = match p.end {
        End::Read if p.no_writer => {
            format!("{name}, writer gone (no process holds the write end)")
        }
        End::Write if p.no_reader => {
            format!("{name}, reader gone (no process holds the read end)")
        }
        End::Read if !writers.is_empty() => format!("{name} written by {}", holders_text(&writers)),
        End::Write if !readers.is_empty() => format!("{name} read by {}", holders_text(&readers)),
        End::Read => format!("{name} (read end), writers unknown"),
        End::Write => format!("{name} (write end), readers unknown"),
        End::Both => {
            let others: Vec<&Holder> = p.holders.iter().collect();
            if others.is_empty() {
                format!("{name} (open read/write), no other process holds it")
            } else {
                format!(
                    "{name} (open read/write), also held by {}",
                    holders_text(&others)
                )
            }
        }
    };
    match (p.queued, p.capacity) {
        (Some(q), Some(c)) if q >= c => {
            out.push_str(&format!(", full ({} queued)", format_bytes(q)))
        }
        (Some(q), _) if q > 0 => out.push_str(&format!(", {} queued", format_bytes(q))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32, comm: &str, fd: u64, end: Option<End>) -> Holder {
        Holder {
            pid,
            comm: comm.into(),
            fd,
            end,
        }
    }

    fn pipe(end: End, holders: Vec<Holder>, complete: bool) -> Pipe {
        let mut p = Pipe {
            inode: 123,
            path: None,
            end,
            holders,
            no_writer: false,
            no_reader: false,
            queued: Some(0),
            capacity: Some(65536),
            dev: 0,
        };
        if complete {
            let others = p.holders.iter().filter_map(|h| h.end);
            p.no_writer = !end.writes() && !others.clone().any(End::writes);
            p.no_reader = !end.reads() && !others.clone().any(End::reads);
        }
        p
    }

    fn tcp(local: &str, remote: Option<&str>, state: &str) -> Socket {
        Socket {
            proto: "tcp".into(),
            inode: 7,
            local: Some(local.into()),
            remote: remote.map(Into::into),
            state: Some(state.into()),
            rx_queue: Some(0),
            tx_queue: Some(0),
            unix_type: None,
            path: None,
            peer: None,
        }
    }

    #[test]
    fn pipe_summaries() {
        let gone = FdObject::Pipe(pipe(End::Read, vec![], true));
        assert_eq!(
            gone.summary(),
            "pipe:[123], writer gone (no process holds the write end)"
        );
        let live = FdObject::Pipe(pipe(
            End::Read,
            vec![holder(42, "producer", 5, Some(End::Write))],
            true,
        ));
        assert_eq!(
            live.summary(),
            "pipe:[123] written by pid 42 (producer) fd 5"
        );
        let mut full = pipe(
            End::Write,
            vec![holder(43, "consumer", 3, Some(End::Read))],
            true,
        );
        full.queued = Some(65536);
        assert_eq!(
            FdObject::Pipe(full).summary(),
            "pipe:[123] read by pid 43 (consumer) fd 3, full (64 KiB queued)"
        );
        let unknown = FdObject::Pipe(pipe(End::Read, vec![], false));
        assert_eq!(unknown.summary(), "pipe:[123] (read end), writers unknown");
        let mut fifo = pipe(End::Write, vec![], true);
        fifo.path = Some("/tmp/ff".into());
        assert_eq!(
            FdObject::Pipe(fifo).summary(),
            "fifo /tmp/ff, reader gone (no process holds the read end)"
        );
    }

    #[test]
    fn socket_summaries() {
        let mut s = tcp("127.0.0.1:41234", Some("127.0.0.1:8080"), "ESTABLISHED");
        assert_eq!(
            FdObject::Socket(s.clone()).summary(),
            "TCP 127.0.0.1:41234 → 127.0.0.1:8080 ESTABLISHED, 0 B queued"
        );
        s.peer = Some(SocketPeer {
            inode: Some(9),
            holders: vec![holder(42, "server", 5, None), holder(42, "server", 6, None)],
            in_accept_queue: false,
            note: None,
        });
        s.rx_queue = Some(10);
        assert_eq!(
            FdObject::Socket(s).summary(),
            "TCP 127.0.0.1:41234 → 127.0.0.1:8080 ESTABLISHED, 10 B received, not read, peer pid 42 (server) fds 5 6"
        );
        let mut l = tcp("0.0.0.0:80", None, "LISTEN");
        l.rx_queue = Some(2);
        assert_eq!(
            FdObject::Socket(l).summary(),
            "TCP 0.0.0.0:80 LISTEN, 2 connections waiting to be accepted"
        );
        let u = Socket {
            proto: "unix".into(),
            inode: 1,
            local: None,
            remote: Some("/run/x.sock".into()),
            state: Some("CONNECTED".into()),
            rx_queue: Some(0),
            tx_queue: Some(0),
            unix_type: Some("stream".into()),
            path: None,
            peer: Some(SocketPeer {
                inode: None,
                holders: vec![],
                in_accept_queue: false,
                note: Some("peer unknown (sock_diag: denied)".into()),
            }),
        };
        assert_eq!(
            FdObject::Socket(u).summary(),
            "unix stream → /run/x.sock CONNECTED, 0 B queued, peer unknown (sock_diag: denied)"
        );
    }

    #[test]
    fn epoll_and_small_summaries() {
        let item = |fd: u64, o: FdObject| EpollItem {
            fd,
            events: vec!["IN".into()],
            data: 0,
            ino: 0,
            object: Some(Box::new(o)),
            note: None,
        };
        let timer = FdObject::Timerfd {
            clockid: "MONOTONIC".into(),
            ticks: 0,
            next_ms: Some(3.0),
            interval_ms: Some(20.0),
        };
        let ep = FdObject::Epoll {
            items: vec![
                item(4, FdObject::Eventfd { count: 0 }),
                item(5, timer.clone()),
                item(6, FdObject::Socket(tcp("0.0.0.0:80", None, "LISTEN"))),
            ],
        };
        assert_eq!(
            ep.summary(),
            "epoll on 3 fds: eventfd (count 0), timerfd every 20ms, TCP 0.0.0.0:80 LISTEN"
        );
        assert_eq!(timer.summary(), "timerfd every 20ms");
        let once = FdObject::Timerfd {
            clockid: "REALTIME".into(),
            ticks: 0,
            next_ms: Some(1500.0),
            interval_ms: None,
        };
        assert_eq!(once.summary(), "timerfd (REALTIME) once, in 1.5s");
        let sig = FdObject::Signalfd {
            signals: vec!["SIGUSR1".into(), "SIGTERM".into()],
        };
        assert_eq!(sig.summary(), "signalfd for SIGUSR1, SIGTERM");
        assert_eq!(
            FdObject::File {
                path: "/etc/passwd".into(),
                pos: 12
            }
            .summary(),
            "/etc/passwd, offset 12"
        );
        let json = serde_json::to_value(&ep).unwrap();
        assert_eq!(json["type"], "epoll");
        assert_eq!(json["items"][0]["object"]["type"], "eventfd");
        assert_eq!(json["items"][2]["object"]["type"], "socket");
        assert_eq!(json["items"][2]["object"]["local"], "0.0.0.0:80");
    }
}
