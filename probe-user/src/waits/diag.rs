//! The other end of a unix socket, from the kernel's sock_diag interface (NETLINK_SOCK_DIAG,
//! `unix_diag`): one exact query per socket inode (`UDIAG_SHOW_PEER | UDIAG_SHOW_NAME |
//! UDIAG_SHOW_RQLEN`), raw netlink through libc.
//!
//! The kernel looks the inode up in the network namespace of the netlink socket, so the socket
//! is opened in the target's namespace: when that differs from ours, a short-lived helper thread
//! enters it (`setns(/proc/PID/ns/net, CLONE_NEWNET)`, per thread) and opens the socket there;
//! the socket stays in that namespace after the thread ends. Entering needs CAP_SYS_ADMIN; when
//! that fails the caller reports the peer as unknown.

use std::{
    fs, io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
/// `struct unix_diag_req`.
const REQ_LEN: usize = 24;
/// `struct unix_diag_msg`.
const MSG_LEN: usize = 16;
pub const REQUEST_LEN: usize = NLMSG_HDRLEN + REQ_LEN;

/// What sock_diag says about one unix socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixDiag {
    pub inode: u32,
    /// SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5.
    pub kind: u8,
    /// TCP_ESTABLISHED 1 (connected), TCP_CLOSE 7 (not), TCP_LISTEN 10.
    pub state: u8,
    /// Bound name: a path, or `@name` (abstract).
    pub name: Option<String>,
    /// The other end's inode: `None` without a peer, `Some(0)` when the peer was closed.
    pub peer: Option<u32>,
    /// Bytes readable and bytes sent but not consumed (listener: pending and max connections).
    pub rqueue: Option<u32>,
    pub wqueue: Option<u32>,
}

/// The request for one socket: `nlmsghdr` + `unix_diag_req` (all states, the inode, no cookie).
pub fn build_request(inode: u32, seq: u32) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0; then unix_diag_req:
    b[16] = libc::AF_UNIX as u8; // sdiag_family
    // sdiag_protocol 0, pad 0
    b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    b[24..28].copy_from_slice(&inode.to_ne_bytes());
    b[28..32]
        .copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    b[32..40].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE twice: no cookie check
    b
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// One netlink datagram from the kernel: `Some(Ok)` for the answer to `seq`, `Some(Err(errno))`
/// for an error answer, `None` when it holds neither (another sequence number, malformed).
pub fn parse_response(buf: &[u8], seq: u32) -> Option<Result<UnixDiag, i32>> {
    let mut off = 0usize;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, off)? as usize;
        let typ = u16_at(buf, off + 4)?;
        let mseq = u32_at(buf, off + 8)?;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let body = &buf[off + NLMSG_HDRLEN..off + len];
        if mseq == seq {
            match typ {
                NLMSG_ERROR => {
                    // `struct nlmsgerr`: a negative errno (0 would be an ACK, not asked for).
                    let err = u32_at(body, 0)? as i32;
                    if err != 0 {
                        return Some(Err(err.saturating_neg()));
                    }
                }
                NLMSG_DONE => return Some(Err(libc::ENOENT)),
                SOCK_DIAG_BY_FAMILY => return parse_msg(body).map(Ok),
                _ => {}
            }
        }
        off += (len + 3) & !3;
    }
    None
}

/// `unix_diag_msg` and its attributes.
fn parse_msg(body: &[u8]) -> Option<UnixDiag> {
    if body.len() < MSG_LEN || body[0] != libc::AF_UNIX as u8 {
        return None;
    }
    let mut d = UnixDiag {
        kind: body[1],
        state: body[2],
        inode: u32_at(body, 4)?,
        ..UnixDiag::default()
    };
    let mut off = MSG_LEN;
    while off + 4 <= body.len() {
        let len = u16_at(body, off)? as usize;
        let typ = u16_at(body, off + 2)?;
        if len < 4 || off + len > body.len() {
            break;
        }
        let data = &body[off + 4..off + len];
        match typ {
            UNIX_DIAG_NAME => d.name = Some(unix_name(data)),
            UNIX_DIAG_PEER => d.peer = u32_at(data, 0),
            UNIX_DIAG_RQLEN => {
                d.rqueue = u32_at(data, 0);
                d.wqueue = u32_at(data, 4);
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(d)
}

/// A `sun_path` as /proc/net/unix shows it: abstract names start with `@` (and their other NUL
/// bytes are `@` too); a path loses its trailing NUL.
pub fn unix_name(raw: &[u8]) -> String {
    if raw.first() == Some(&0) {
        let s: Vec<u8> = raw.iter().map(|&b| if b == 0 { b'@' } else { b }).collect();
        crate::report::target_text(&s)
    } else {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        crate::report::target_text(&raw[..end])
    }
}

/// A NETLINK_SOCK_DIAG socket in some network namespace.
pub struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
}

impl DiagSocket {
    /// A socket in the network namespace of `pid`.
    pub fn open_for(pid: u32) -> io::Result<DiagSocket> {
        let ns = format!("/proc/{pid}/ns/net");
        let theirs = fs::metadata(&ns)?;
        let same = fs::metadata("/proc/thread-self/ns/net")
            .map(|ours| ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
            .unwrap_or(false);
        let fd = if same {
            open_socket()?
        } else {
            // setns affects only the calling thread: do it on a thread of our own that ends
            // right after opening the socket.
            std::thread::Builder::new()
                .name("stallprobe-netns".into())
                .spawn(move || -> io::Result<OwnedFd> {
                    let f = fs::File::open(&ns)?;
                    // SAFETY: setns on a valid fd; it changes this (helper) thread only.
                    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    open_socket()
                })?
                .join()
                .map_err(|_| io::Error::other("netns helper thread panicked"))??
        };
        Ok(DiagSocket { fd, seq: 0 })
    }

    /// Ask about one socket inode.
    pub fn query(&mut self, inode: u64) -> io::Result<UnixDiag> {
        let ino = u32::try_from(inode)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "inode beyond 32 bits"))?;
        self.seq = self.seq.wrapping_add(1);
        let req = build_request(ino, self.seq);
        // SAFETY: a zeroed sockaddr_nl is valid; nl_pid 0 is the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        // Answers to earlier, abandoned queries may still be queued: skip them (bounded).
        for _ in 0..16 {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match parse_response(&buf[..n as usize], self.seq) {
                Some(Ok(d)) => return Ok(d),
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                None => continue,
            }
        }
        Err(io::Error::other("no answer from sock_diag"))
    }
}

fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Never hang on a kernel that does not answer.
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(typ: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&typ.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn message(typ: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&typ.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn request_layout() {
        let r = build_request(250288, 7);
        assert_eq!(u32_at(&r, 0), Some(40));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(r[16], libc::AF_UNIX as u8);
        assert_eq!(u32_at(&r, 24), Some(250288));
        assert_eq!(u32_at(&r, 28), Some(0x15));
        assert_eq!(&r[32..40], &[0xff; 8]);
    }

    #[test]
    fn answer_with_peer_name_and_queues() {
        let mut body = vec![libc::AF_UNIX as u8, 1, 1, 0];
        body.extend_from_slice(&250288u32.to_ne_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend(attr(UNIX_DIAG_NAME, b"/tmp/us.sock\0"));
        body.extend(attr(UNIX_DIAG_PEER, &250287u32.to_ne_bytes()));
        let mut rq = 5u32.to_ne_bytes().to_vec();
        rq.extend_from_slice(&9u32.to_ne_bytes());
        body.extend(attr(UNIX_DIAG_RQLEN, &rq));
        let mut buf = message(SOCK_DIAG_BY_FAMILY, 2, &body);
        // An unrelated answer first is skipped.
        let mut both = message(SOCK_DIAG_BY_FAMILY, 1, &body);
        both.append(&mut buf);
        let d = parse_response(&both, 2).unwrap().unwrap();
        assert_eq!(d.inode, 250288);
        assert_eq!((d.kind, d.state), (1, 1));
        assert_eq!(d.name.as_deref(), Some("/tmp/us.sock"));
        assert_eq!(d.peer, Some(250287));
        assert_eq!((d.rqueue, d.wqueue), (Some(5), Some(9)));
        assert_eq!(parse_response(&both, 3), None);
    }

    #[test]
    fn error_answer() {
        let buf = message(NLMSG_ERROR, 4, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_response(&buf, 4), Some(Err(libc::ENOENT)));
    }

    #[test]
    fn abstract_names() {
        assert_eq!(unix_name(b"\0my\0name"), "@my@name");
        assert_eq!(unix_name(b"/run/x.sock\0"), "/run/x.sock");
        assert_eq!(unix_name(b""), "");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn responses_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200), seq in 0u32..4) {
            let _ = parse_response(&buf, seq);
            let _ = parse_msg(&buf);
            let _ = unix_name(&buf);
        }

        #[test]
        fn framed_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..120), typ in 0u16..24) {
            let _ = parse_response(&message(typ, 1, &body), 1);
            let mut msg = vec![libc::AF_UNIX as u8, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            msg.extend_from_slice(&body);
            let _ = parse_response(&message(SOCK_DIAG_BY_FAMILY, 1, &msg), 1);
        }
    }
}
