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

pub use crate::report::{End, EpollItem, FdObject, Holder, Pipe, Socket, SocketPeer};

use holders::{Found, Wanted, fifo_key};
use parse::{InetEntry, UnixEntry};

/// Items of one epoll described in full; the rest are listed with their events only.
const EPOLL_DESCRIBED: usize = 64;
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
    Some(crate::report::target_text(&raw[..end])).filter(|s| !s.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

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
