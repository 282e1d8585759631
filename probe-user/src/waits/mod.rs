//! What an fd of a process is: "why is it blocked" for a thread blocked on an fd.
//!
//! [`describe_fd`] turns `/proc/PID/fd/N` into an [`FdObject`]: a TCP/UDP/unix socket with its
//! addresses, state, queued bytes and the process holding the other end when it is on this
//! host; a pipe or FIFO with every process holding either end (and whether the writer or the
//! reader is gone); an eventfd, timerfd, signalfd or epoll (with its interest list, each item
//! described one level deep); a file with its offset; a terminal. [`FdObject::summary`] says it
//! in one line for people; the type serializes to JSON (`"type": "socket"` ...).
//!
//! Sources: /proc/PID/fd and fdinfo (see [`parse`]); the target's own network namespace
//! through /proc/PID/net/{tcp,tcp6,udp,udp6,unix}; sock_diag for unix peers ([`diag`], in the
//! target's namespace); one pass over /proc/*/fd per call for holders ([`holders`]);
//! `pidfd_getfd` for a pipe's queued bytes (a duplicate of the target's own open file: nothing
//! is opened anew, so no pipe end is added, even for a moment).
//!
//! Everything tolerates the target (or any other process) exiting mid-way: what can no longer
//! be read is left out, nothing panics. Limits: the other end of a TCP/UDP connection is found
//! only in the target's network namespace (a peer behind a veth in another namespace is not
//! matched); unix peers need CAP_SYS_ADMIN to enter another namespace (else "peer unknown").

pub mod diag;
pub mod holders;
pub mod parse;

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{FileTypeExt, MetadataExt},
    },
};

use serde::Serialize;

pub use holders::Holder;
pub use parse::End;

use holders::{Found, Wanted, fifo_key};
use parse::{InetEntry, UnixEntry};

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
    dev: u64,
}

/// One entry of an epoll interest list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpollItem {
    /// The fd number it was registered with.
    pub fd: u64,
    /// The events asked for, decoded: `IN`, `OUT`, `RDHUP`, `ET`, `ONESHOT` ... (the kernel
    /// adds `ERR` and `HUP` to every item).
    pub events: Vec<String>,
    #[serde(serialize_with = "crate::report::ser_hex")]
    pub data: u64,
    /// The inode of the registered file.
    pub ino: u64,
    /// What the fd is (not described for items past the first 64, nor inside a nested epoll).
    pub object: Option<Box<FdObject>>,
    /// E.g. that the fd was closed while the file stays registered (still open elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Items of one epoll described in full; the rest are listed with their events only.
const EPOLL_DESCRIBED: usize = 64;
/// Holders / items named in a summary before "and N more".
const SUMMARY_MAX: usize = 3;
const EPOLL_SUMMARY_MAX: usize = 5;

/// What fd `fd` of process `pid` is. `None` when there is no such fd (or process).
pub fn describe_fd(pid: u32, fd: u64) -> Option<FdObject> {
    describe_fds(pid, &[fd]).pop().flatten()
}

/// [`describe_fd`] for several fds of one process, sharing the /proc tables it reads and the
/// single pass over /proc/*/fd.
pub fn describe_fds(pid: u32, fds: &[u64]) -> Vec<Option<FdObject>> {
    let mut cx = Ctx::new(pid);
    let mut objs: Vec<Option<FdObject>> = fds.iter().map(|&fd| cx.describe(fd, 0)).collect();
    let mut wanted = Wanted::default();
    for o in objs.iter().flatten() {
        o.wanted(&mut wanted);
    }
    drop(cx); // close the pidfd and netlink socket before looking at everyone's fds
    let mut found = holders::scan(&wanted);
    for (o, &fd) in objs.iter_mut().zip(fds) {
        if let Some(o) = o {
            o.fill(pid, fd, &mut found);
        }
    }
    objs
}

// ---- gathering -------------------------------------------------------------------------------

/// What one call reads once: the target's socket tables, a sock_diag socket, a pidfd.
struct Ctx {
    pid: u32,
    inet: HashMap<&'static str, Vec<InetEntry>>,
    unix: Option<Vec<UnixEntry>>,
    diag: Option<Result<diag::DiagSocket, String>>,
    pidfd: Option<Option<OwnedFd>>,
}

const INET_TABLES: [&str; 4] = ["tcp", "tcp6", "udp", "udp6"];

impl Ctx {
    fn new(pid: u32) -> Ctx {
        Ctx {
            pid,
            inet: HashMap::new(),
            unix: None,
            diag: None,
            pidfd: None,
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(format!("/proc/{}/{rel}", self.pid)).ok()
    }

    fn describe(&mut self, fd: u64, depth: u8) -> Option<FdObject> {
        let link = crate::procfs::read_fd_target(self.pid, fd)?;
        let fdinfo = self.read(&format!("fdinfo/{fd}"));
        let info = fdinfo.as_deref();
        let other = || FdObject::Other { link: link.clone() };
        if let Some(ino) = parse::link_inode(&link, "socket") {
            return Some(FdObject::Socket(self.socket(fd, ino)));
        }
        if let Some(ino) = parse::link_inode(&link, "pipe") {
            let end = info
                .and_then(parse::fdinfo_flags)
                .map(End::from_flags)
                .unwrap_or(End::Read);
            return Some(FdObject::Pipe(self.pipe(fd, ino, None, 0, end)));
        }
        if let Some(kind) = link.strip_prefix("anon_inode:") {
            let kind = kind.trim_start_matches('[').trim_end_matches(']');
            let obj = match kind {
                "eventfd" => info
                    .and_then(parse::parse_eventfd_count)
                    .map(|count| FdObject::Eventfd { count }),
                "timerfd" => info
                    .and_then(parse::parse_timerfd)
                    .map(|t| FdObject::Timerfd {
                        clockid: parse::clock_name(t.clockid),
                        ticks: t.ticks,
                        next_ms: t.next_ms,
                        interval_ms: t.interval_ms,
                    }),
                "signalfd" => info
                    .and_then(parse::parse_sigmask)
                    .map(|s| FdObject::Signalfd {
                        signals: s.into_iter().map(crate::signals::name).collect(),
                    }),
                "eventpoll" => info.map(|i| FdObject::Epoll {
                    items: self.epoll_items(i, depth),
                }),
                _ => None,
            };
            return Some(obj.unwrap_or_else(other));
        }
        if link.starts_with('/') {
            if is_tty(&link) {
                return Some(FdObject::Tty { path: link });
            }
            let meta = fs::metadata(format!("/proc/{}/fd/{fd}", self.pid)).ok();
            if let Some(m) = meta.filter(|m| m.file_type().is_fifo()) {
                let end = info
                    .and_then(parse::fdinfo_flags)
                    .map(End::from_flags)
                    .unwrap_or(End::Read);
                return Some(FdObject::Pipe(self.pipe(
                    fd,
                    m.ino(),
                    Some(link.clone()),
                    m.dev(),
                    end,
                )));
            }
            let pos = info.and_then(parse::fdinfo_pos).unwrap_or(0);
            return Some(FdObject::File { path: link, pos });
        }
        Some(other())
    }

    fn epoll_items(&mut self, fdinfo: &str, depth: u8) -> Vec<EpollItem> {
        // The kernel lists them in its own (red-black tree) order: show them by fd.
        let mut lines = parse::parse_epoll_items(fdinfo);
        lines.sort_by_key(|l| l.tfd);
        lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let mut item = EpollItem {
                    fd: l.tfd,
                    events: parse::decode_epoll_events(l.events),
                    data: l.data,
                    ino: l.ino,
                    object: None,
                    note: None,
                };
                if depth > 0 || i >= EPOLL_DESCRIBED {
                    return item;
                }
                // The registered fd may have been closed (the file stays registered while
                // another fd or process keeps it open) or reused for another file.
                match self.fd_ino(l.tfd) {
                    Some(ino) if ino == l.ino => {
                        item.object = self.describe(l.tfd, depth + 1).map(Box::new);
                    }
                    Some(_) => {
                        item.note = Some(format!(
                            "fd {} now refers to another file; the registered one (inode {}) was closed there but is still open elsewhere",
                            l.tfd, l.ino
                        ))
                    }
                    None => {
                        item.note = Some(format!(
                            "fd {} was closed; the registered file (inode {}) is still open elsewhere",
                            l.tfd, l.ino
                        ))
                    }
                }
                item
            })
            .collect()
    }

    /// The inode of the file fd `fd` refers to.
    fn fd_ino(&self, fd: u64) -> Option<u64> {
        let link = crate::procfs::read_fd_target(self.pid, fd)?;
        if let Some(i) = parse::link_inode(&link, "socket").or(parse::link_inode(&link, "pipe")) {
            return Some(i);
        }
        self.read(&format!("fdinfo/{fd}"))
            .and_then(|s| parse::fdinfo_ino(&s))
    }

    // -- pipes --

    fn pipe(&mut self, fd: u64, inode: u64, path: Option<String>, dev: u64, end: End) -> Pipe {
        let (queued, capacity) = match self.dup_fd(fd, inode) {
            Some(f) => {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int.
                let q = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
                // SAFETY: F_GETPIPE_SZ has no pointer argument.
                let cap = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETPIPE_SZ) };
                (
                    (q == 0).then_some(n.max(0) as u64),
                    (cap > 0).then_some(cap as u64),
                )
            }
            None => (None, None),
        };
        Pipe {
            inode,
            path,
            end,
            holders: Vec::new(),
            no_writer: false,
            no_reader: false,
            queued,
            capacity,
            dev,
        }
    }

    /// A duplicate of the target's open file (pidfd_getfd), when it is still the file with
    /// inode `ino`. Needs ptrace access to the target.
    fn dup_fd(&mut self, fd: u64, ino: u64) -> Option<OwnedFd> {
        let pid = self.pid;
        let pidfd = self
            .pidfd
            .get_or_insert_with(|| {
                // SAFETY: pidfd_open takes a pid and flags, returns a new fd or -1.
                let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
                // SAFETY: a fresh fd we own.
                (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r as i32) })
            })
            .as_ref()?;
        let target = i32::try_from(fd).ok()?;
        // SAFETY: pidfd_getfd returns a new fd (close-on-exec) or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if r < 0 {
            return None;
        }
        // SAFETY: a fresh fd we own.
        let f = unsafe { OwnedFd::from_raw_fd(r as i32) };
        // The fd number may have been reused for another file in the meantime.
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and struct.
        (unsafe { libc::fstat(f.as_raw_fd(), &mut st) } == 0 && st.st_ino == ino).then_some(f)
    }

    // -- sockets --

    fn inet_table(&mut self, name: &'static str) -> &[InetEntry] {
        if !self.inet.contains_key(name) {
            let t = self
                .read(&format!("net/{name}"))
                .map(|s| parse::parse_inet_table(&s))
                .unwrap_or_default();
            self.inet.insert(name, t);
        }
        &self.inet[name]
    }

    fn unix_table(&mut self) -> &[UnixEntry] {
        if self.unix.is_none() {
            self.unix = Some(
                self.read("net/unix")
                    .map(|s| parse::parse_unix_table(&s))
                    .unwrap_or_default(),
            );
        }
        self.unix.as_deref().unwrap_or_default()
    }

    fn socket(&mut self, fd: u64, inode: u64) -> Socket {
        // The protocol's name on the socket's own inode picks the one table to read (reading
        // /proc/net/tcp walks the whole hash table: milliseconds).
        let name = sock_proto_name(self.pid, fd);
        let tables: &[&'static str] = match name.as_deref() {
            Some("TCP") => &["tcp"],
            Some("TCPv6") => &["tcp6"],
            Some("UDP") => &["udp"],
            Some("UDPv6") => &["udp6"],
            Some(_) => &[],
            None => &INET_TABLES,
        };
        for &t in tables {
            if let Some(e) = self.inet_table(t).iter().find(|e| e.inode == inode) {
                let e = e.clone();
                return self.inet_socket(t, &e);
            }
        }
        if name.as_deref().is_none_or(|n| n.starts_with("UNIX"))
            && let Some(u) = self.unix_table().iter().find(|e| e.inode == inode)
        {
            let u = u.clone();
            return self.unix_socket(&u);
        }
        // Not in the tables: netlink, packet, raw ... (or closed meanwhile): name it at least.
        let proto = match name {
            Some(n) if n.starts_with("UNIX") => "unix".to_string(),
            Some(n) => n.to_ascii_lowercase(),
            None => self
                .dup_fd(fd, inode)
                .and_then(|f| sockopt(&f, libc::SO_DOMAIN))
                .map(parse::family_name)
                .unwrap_or_else(|| "unknown".into()),
        };
        Socket {
            proto,
            inode,
            local: None,
            remote: None,
            state: None,
            rx_queue: None,
            tx_queue: None,
            unix_type: None,
            path: None,
            peer: None,
        }
    }

    fn inet_socket(&mut self, table: &'static str, e: &InetEntry) -> Socket {
        let tcp = table.starts_with("tcp");
        let connected = !parse::is_unset(&e.remote);
        let peer = if connected && e.state != parse::TCP_LISTEN {
            self.inet_peer(table, e)
        } else {
            None
        };
        Socket {
            proto: table.to_string(),
            inode: e.inode,
            local: Some(parse::format_addr(&e.local)),
            remote: connected.then(|| parse::format_addr(&e.remote)),
            state: tcp.then(|| parse::tcp_state_name(e.state)),
            rx_queue: Some(e.rx_queue),
            tx_queue: Some(e.tx_queue),
            unix_type: None,
            path: None,
            peer,
        }
    }

    /// The other end of a connection when it is in the same namespace's tables: the socket
    /// whose local and remote addresses are ours swapped; when it has no inode yet, the
    /// connection waits in a listener's accept queue: the listener.
    fn inet_peer(&mut self, table: &'static str, e: &InetEntry) -> Option<SocketPeer> {
        let (local, remote) = (parse::canonical(&e.local), parse::canonical(&e.remote));
        // Our own family's table first; the other one (v4-mapped addresses on IPv6 sockets)
        // only when needed.
        let other_table = match table {
            "tcp" => "tcp6",
            "tcp6" => "tcp",
            "udp" => "udp6",
            _ => "udp",
        };
        let order = [table, other_table];
        // The other end; prefer a socket with a file over a leftover (TIME_WAIT ...) entry.
        let mut other: Option<InetEntry> = None;
        for t in order {
            for o in self.inet_table(t).iter().filter(|o| {
                o.inode != e.inode
                    && parse::canonical(&o.local) == remote
                    && parse::canonical(&o.remote) == local
            }) {
                if other.as_ref().is_none_or(|c| c.inode == 0) {
                    other = Some(o.clone());
                }
            }
            if other.is_some() {
                break;
            }
        }
        let other = other?;
        if other.inode != 0 {
            return Some(SocketPeer {
                inode: Some(other.inode),
                holders: Vec::new(),
                in_accept_queue: false,
                note: None,
            });
        }
        // No file: either the connection waits in a listener's accept queue, or the other
        // side closed its socket (FIN_WAIT2, TIME_WAIT ... kept by the kernel alone).
        let queued = [0x01, 0x03, 0x08, 0x0C].contains(&other.state);
        if !queued || !table.starts_with("tcp") {
            return Some(SocketPeer {
                inode: None,
                holders: Vec::new(),
                in_accept_queue: false,
                note: Some(format!(
                    "peer closed (its side is {})",
                    parse::tcp_state_name(other.state)
                )),
            });
        }
        // Not accepted yet: find the listener on that address (or the wildcard one).
        let matches = |o: &InetEntry, exact: bool| {
            o.state == parse::TCP_LISTEN
                && o.local.port() == remote.port()
                && if exact {
                    parse::canonical(&o.local).ip() == remote.ip()
                } else {
                    o.local.ip().is_unspecified()
                }
        };
        let mut listener: Option<u64> = None;
        'find: for t in order {
            for exact in [true, false] {
                if let Some(o) = self.inet_table(t).iter().find(|o| matches(o, exact)) {
                    listener = Some(o.inode);
                    break 'find;
                }
            }
        }
        Some(SocketPeer {
            inode: listener,
            holders: Vec::new(),
            in_accept_queue: true,
            note: listener
                .is_none()
                .then(|| "waiting in an accept queue; listener not found".to_string()),
        })
    }

    fn unix_socket(&mut self, u: &UnixEntry) -> Socket {
        let mut s = Socket {
            proto: "unix".into(),
            inode: u.inode,
            local: u.path.clone(),
            remote: None,
            state: Some(u.state_name()),
            rx_queue: None,
            tx_queue: None,
            unix_type: Some(parse::sock_type_name(u.kind)),
            path: u.path.clone(),
            peer: None,
        };
        let pid = self.pid;
        let diag = self
            .diag
            .get_or_insert_with(|| diag::DiagSocket::open_for(pid).map_err(|e| e.to_string()));
        let d = match diag {
            Ok(sock) => sock.query(u.inode).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let d = match d {
            Ok(d) => d,
            Err(err) => {
                // Connected: the other end matters, say that it is unknown.
                if u.state == 3 {
                    s.peer = Some(SocketPeer {
                        inode: None,
                        holders: Vec::new(),
                        in_accept_queue: false,
                        note: Some(format!("peer unknown (sock_diag: {err})")),
                    });
                }
                return s;
            }
        };
        s.rx_queue = d.rqueue.map(u64::from);
        // The kernel's write-queue figure for unix sockets is memory (with per-buffer overhead),
        // not bytes: what was sent and not consumed is what the peer has to read (below).
        let listening = d.state == 10;
        if listening {
            s.tx_queue = d.wqueue.map(u64::from);
        }
        if s.path.is_none() {
            s.path = d.name.clone().filter(|n| !n.is_empty());
            s.local = s.path.clone();
        }
        match d.peer {
            Some(0) => {
                s.peer = Some(SocketPeer {
                    inode: None,
                    holders: Vec::new(),
                    in_accept_queue: false,
                    note: Some("peer closed".into()),
                })
            }
            Some(p) => {
                // The peer's own name: for a client, the server's path.
                let diag = self.diag.as_mut().and_then(|d| d.as_mut().ok());
                if let Some(pd) = diag.and_then(|d| d.query(u64::from(p)).ok()) {
                    s.remote = pd.name.filter(|n| !n.is_empty());
                    s.tx_queue = pd.rqueue.map(u64::from);
                }
                s.peer = Some(SocketPeer {
                    inode: Some(u64::from(p)),
                    holders: Vec::new(),
                    in_accept_queue: false,
                    note: None,
                });
            }
            None if u.state == 3 => {
                s.peer = Some(SocketPeer {
                    inode: None,
                    holders: Vec::new(),
                    in_accept_queue: false,
                    note: Some("peer unknown".into()),
                })
            }
            None => {}
        }
        s
    }
}

fn sockopt(f: &OwnedFd, opt: libc::c_int) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointers and length for an int option.
    let r = unsafe {
        libc::getsockopt(
            f.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The socket's protocol as sockfs names it (`TCP`, `TCPv6`, `UDP`, `UNIX-STREAM`, `NETLINK`
/// ...): the `system.sockprotoname` attribute of its inode, read through the /proc link.
fn sock_proto_name(pid: u32, fd: u64) -> Option<String> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings, a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    let raw = &buf[..n as usize];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned()).filter(|s| !s.is_empty())
}

fn is_tty(path: &str) -> bool {
    path.starts_with("/dev/pts/")
        || path.starts_with("/dev/tty")
        || path == "/dev/console"
        || path == "/dev/ptmx"
}

// ---- holders ---------------------------------------------------------------------------------

impl FdObject {
    /// The keys whose holders this object needs.
    fn wanted(&self, w: &mut Wanted) {
        match self {
            FdObject::Pipe(p) => match &p.path {
                Some(path) => w
                    .fifos
                    .entry(path.clone())
                    .or_default()
                    .push((p.dev, p.inode)),
                None => {
                    w.links.insert(format!("pipe:[{}]", p.inode));
                }
            },
            FdObject::Socket(s) => {
                if let Some(i) = s.peer.as_ref().and_then(|p| p.inode) {
                    w.links.insert(format!("socket:[{i}]"));
                }
            }
            FdObject::Epoll { items } => {
                for o in items.iter().filter_map(|i| i.object.as_deref()) {
                    o.wanted(w);
                }
            }
            _ => {}
        }
    }

    /// Fill in holders from the pass; `(pid, fd)` is this object's own fd.
    fn fill(&mut self, pid: u32, fd: u64, found: &mut Found) {
        match self {
            FdObject::Pipe(p) => {
                let key = match p.path {
                    Some(_) => fifo_key(p.dev, p.inode),
                    None => format!("pipe:[{}]", p.inode),
                };
                p.holders = found.holders(&key, Some((pid, fd)), true);
                if found.complete {
                    let others = p.holders.iter().filter_map(|h| h.end);
                    p.no_writer = !p.end.writes() && !others.clone().any(End::writes);
                    p.no_reader = !p.end.reads() && !others.clone().any(End::reads);
                }
            }
            FdObject::Socket(s) => {
                if let Some(peer) = s.peer.as_mut()
                    && let Some(i) = peer.inode
                {
                    peer.holders = found.holders(&format!("socket:[{i}]"), None, false);
                }
            }
            FdObject::Epoll { items } => {
                for it in items.iter_mut() {
                    if let Some(o) = it.object.as_deref_mut() {
                        o.fill(pid, it.fd, found);
                    }
                }
            }
            _ => {}
        }
    }
}

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
        (Some(i), _) => s.push_str(&format!(" every {}", parse::format_ms(i))),
        (None, Some(n)) => s.push_str(&format!(" once, in {}", parse::format_ms(n))),
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
                q.push(format!("{} received, not read", parse::format_bytes(rx)));
            }
            if tx > 0 {
                let what = match s.proto.as_str() {
                    "tcp" | "tcp6" => "sent, not acknowledged",
                    "unix" => "sent, not read by the peer",
                    _ => "not sent yet",
                };
                q.push(format!("{} {what}", parse::format_bytes(tx)));
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
            out.push_str(&format!(", full ({} queued)", parse::format_bytes(q)))
        }
        (Some(q), _) if q > 0 => out.push_str(&format!(", {} queued", parse::format_bytes(q))),
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

    #[test]
    fn missing_fd_is_none() {
        // Our own process: an fd number that is not open.
        assert_eq!(describe_fd(std::process::id(), 1 << 30), None);
        assert_eq!(describe_fd(u32::MAX, 0), None);
    }

    #[test]
    fn own_sockets_and_pipe() {
        // Our own fds: no privileges needed (sock_diag for unix sockets is unprivileged).
        let me = std::process::id();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let o = describe_fd(me, udp.as_raw_fd() as u64).unwrap();
        let FdObject::Socket(s) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(s.proto, "udp");
        assert_eq!(o.summary(), format!("UDP 127.0.0.1:{port}, 0 B queued"));

        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let o = describe_fd(me, a.as_raw_fd() as u64).unwrap();
        let FdObject::Socket(s) = &o else {
            panic!("{o:?}")
        };
        let peer = s.peer.as_ref().unwrap();
        assert!(
            peer.holders
                .iter()
                .any(|h| h.pid == me && h.fd == b.as_raw_fd() as u64),
            "{o:?}"
        );

        // SAFETY: plain socket(2).
        let nl = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(nl >= 0);
        // SAFETY: we own nl.
        let nl = unsafe { OwnedFd::from_raw_fd(nl) };
        let o = describe_fd(me, nl.as_raw_fd() as u64).unwrap();
        assert!(o.summary().ends_with("(netlink)"), "{}", o.summary());

        let (r, mut w) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut w, b"abc").unwrap();
        let o = describe_fd(me, r.as_raw_fd() as u64).unwrap();
        let FdObject::Pipe(p) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(p.end, End::Read);
        assert_eq!(p.queued, Some(3));
        assert!(!p.no_writer);
        assert!(
            p.holders
                .iter()
                .any(|h| h.pid == me && h.fd == w.as_raw_fd() as u64 && h.end == Some(End::Write)),
            "{o:?}"
        );
        drop(w);
        let o = describe_fd(me, r.as_raw_fd() as u64).unwrap();
        // Without root, other users' fd tables cannot be read: then nothing is claimed gone.
        let want = if nix::unistd::geteuid().is_root() {
            "writer gone (no process holds the write end), 3 B queued"
        } else {
            "(read end), writers unknown, 3 B queued"
        };
        assert!(o.summary().ends_with(want), "{}", o.summary());
    }

    #[test]
    fn own_eventfd_and_file() {
        // Needs no privileges: our own fds.
        // SAFETY: plain eventfd(2).
        let efd = unsafe { libc::eventfd(5, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        // SAFETY: we own efd.
        let _efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let got = describe_fd(std::process::id(), efd as u64).unwrap();
        assert_eq!(got, FdObject::Eventfd { count: 5 });
        let f = fs::File::open("/proc/self/status").unwrap();
        match describe_fd(std::process::id(), f.as_raw_fd() as u64).unwrap() {
            FdObject::File { path, pos } => {
                assert!(path.starts_with("/proc/"), "{path}");
                assert_eq!(pos, 0);
            }
            other => panic!("{other:?}"),
        }
    }
}
