//! Pure parsers for what [`super`] reads: /proc/PID/fdinfo/FD (epoll, eventfd, timerfd,
//! signalfd, files), /proc/PID/net/{tcp,tcp6,udp,udp6,unix}, and the bits and numbers in them.
//!
//! All of them take text and return `None`/empty on anything unexpected: they never panic
//! (property-tested), because a file read from a process that is exiting can be cut short.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// ---- fdinfo ----------------------------------------------------------------------------------

/// The value of a `key:` line of an fdinfo file (`pos:\t12`, `eventfd-count:   1a`), trimmed.
pub fn fdinfo_field<'a>(fdinfo: &'a str, key: &str) -> Option<&'a str> {
    fdinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// `pos:` (decimal).
pub fn fdinfo_pos(fdinfo: &str) -> Option<u64> {
    fdinfo_field(fdinfo, "pos")?.parse().ok()
}

/// `flags:` (octal: O_WRONLY = 01, O_RDWR = 02, O_NONBLOCK = 04000 ...).
pub fn fdinfo_flags(fdinfo: &str) -> Option<u32> {
    u32::from_str_radix(fdinfo_field(fdinfo, "flags")?, 8).ok()
}

/// `ino:` (decimal) — the inode of the open file.
pub fn fdinfo_ino(fdinfo: &str) -> Option<u64> {
    fdinfo_field(fdinfo, "ino")?.parse().ok()
}

/// `eventfd-count:` — printed in hex by the kernel (`%16llx`).
pub fn parse_eventfd_count(fdinfo: &str) -> Option<u64> {
    u64::from_str_radix(fdinfo_field(fdinfo, "eventfd-count")?, 16).ok()
}

/// What a timerfd's fdinfo says (`clockid: 1`, `ticks: 0`, `it_value: (0, 5000)`,
/// `it_interval: (0, 20000000)`).
#[derive(Clone, Debug, PartialEq)]
pub struct TimerfdInfo {
    pub clockid: i32,
    /// Expirations not read yet.
    pub ticks: u64,
    /// Time to the next expiration; `None` when disarmed or already expired (unread).
    pub next_ms: Option<f64>,
    /// Period; `None` for a one-shot timer.
    pub interval_ms: Option<f64>,
}

pub fn parse_timerfd(fdinfo: &str) -> Option<TimerfdInfo> {
    let clockid = fdinfo_field(fdinfo, "clockid")?.parse().ok()?;
    let ticks = fdinfo_field(fdinfo, "ticks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ms = |key: &str| -> Option<f64> {
        let (s, ns) = parse_timespec_pair(fdinfo_field(fdinfo, key)?)?;
        let ms = s as f64 * 1000.0 + ns as f64 / 1e6;
        (ms > 0.0).then_some(ms)
    };
    Some(TimerfdInfo {
        clockid,
        ticks,
        next_ms: ms("it_value"),
        interval_ms: ms("it_interval"),
    })
}

/// `(12, 345)` → (12, 345).
fn parse_timespec_pair(v: &str) -> Option<(u64, u64)> {
    let inner = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = inner.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// A clock id as its `CLOCK_` name without the prefix (`MONOTONIC`), or the number.
pub fn clock_name(id: i32) -> String {
    match id {
        0 => "REALTIME".into(),
        1 => "MONOTONIC".into(),
        7 => "BOOTTIME".into(),
        8 => "REALTIME_ALARM".into(),
        9 => "BOOTTIME_ALARM".into(),
        n => format!("clock {n}"),
    }
}

/// `sigmask:` of a signalfd (hex, bit n-1 = signal n) as signal numbers, ascending.
pub fn parse_sigmask(fdinfo: &str) -> Option<Vec<u32>> {
    let mask = u64::from_str_radix(fdinfo_field(fdinfo, "sigmask")?, 16).ok()?;
    Some(
        (0..64)
            .filter(|b| mask & (1u64 << b) != 0)
            .map(|b| b + 1)
            .collect(),
    )
}

/// One item of an epoll interest list, from a line of the epoll fd's fdinfo:
/// `tfd:        4 events:       19 data:                4  pos:0 ino:40f sdev:10`
/// (`events`, `data`, `ino` and `sdev` in hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpollLine {
    pub tfd: u64,
    pub events: u32,
    pub data: u64,
    pub ino: u64,
    pub sdev: u64,
}

pub fn parse_epoll_items(fdinfo: &str) -> Vec<EpollLine> {
    fdinfo.lines().filter_map(parse_epoll_line).collect()
}

pub fn parse_epoll_line(line: &str) -> Option<EpollLine> {
    if !line.trim_start().starts_with("tfd:") {
        return None;
    }
    // Tokens are either `key:` followed by the value, or `key:value`.
    let mut kv: Vec<(&str, &str)> = Vec::new();
    let mut toks = line.split_whitespace();
    while let Some(t) = toks.next() {
        let (k, v) = t.split_once(':')?;
        let v = if v.is_empty() { toks.next()? } else { v };
        kv.push((k, v));
    }
    let get = |k: &str| kv.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let hex64 = |k: &str| get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
    Some(EpollLine {
        tfd: get("tfd")?.parse().ok()?,
        events: u32::from_str_radix(get("events")?, 16).ok()?,
        data: hex64("data").unwrap_or(0),
        ino: hex64("ino").unwrap_or(0),
        sdev: hex64("sdev").unwrap_or(0),
    })
}

/// The epoll event bits (EPOLLIN ...), in bit order, without the `EPOLL` prefix.
const EPOLL_BITS: &[(u32, &str)] = &[
    (0x001, "IN"),
    (0x002, "PRI"),
    (0x004, "OUT"),
    (0x008, "ERR"),
    (0x010, "HUP"),
    (0x020, "NVAL"),
    (0x040, "RDNORM"),
    (0x080, "RDBAND"),
    (0x100, "WRNORM"),
    (0x200, "WRBAND"),
    (0x400, "MSG"),
    (0x2000, "RDHUP"),
    (1 << 28, "EXCLUSIVE"),
    (1 << 29, "WAKEUP"),
    (1 << 30, "ONESHOT"),
    (1 << 31, "ET"),
];

/// `0x8000001d` → `["IN", "OUT", "ERR", "HUP", "ET"]`; unknown bits as `0x...`.
pub fn decode_epoll_events(mask: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = mask;
    for &(bit, name) in EPOLL_BITS {
        if mask & bit != 0 {
            out.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

// ---- /proc/PID/net ---------------------------------------------------------------------------

/// One socket of /proc/PID/net/{tcp,tcp6,udp,udp6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InetEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state number (UDP: 1 connected, 7 not).
    pub state: u8,
    /// Bytes not yet sent or acknowledged; for a listener, the accept backlog limit.
    pub tx_queue: u64,
    /// Bytes received not yet read; for a listener, connections waiting for accept().
    pub rx_queue: u64,
    /// 0 for a connection still in a listener's accept queue (no file yet).
    pub inode: u64,
}

/// A line of /proc/net/tcp or tcp6 (udp, udp6 have the same columns). The header line and
/// anything malformed give `None`.
pub fn parse_inet_line(line: &str) -> Option<InetEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    let (tx, rx) = f[4].split_once(':')?;
    Some(InetEntry {
        local: parse_inet_addr(f[1])?,
        remote: parse_inet_addr(f[2])?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: f[9].parse().ok()?,
    })
}

pub fn parse_inet_table(s: &str) -> Vec<InetEntry> {
    s.lines().filter_map(parse_inet_line).collect()
}

/// `0100007F:1F90` → 127.0.0.1:8080; `00000000000000000000000001000000:1F90` → [::1]:8080.
/// The address is one (IPv4) or four (IPv6) u32 words in hex, each printed from memory in the
/// host's byte order (little-endian here); the port is a plain hex number.
pub fn parse_inet_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addr.is_ascii() {
        return None;
    }
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `127.0.0.1:8080`, `[::1]:8080`, `[::ffff:10.0.0.1]:80` (v4-mapped stays as the kernel shows
/// it: the socket is IPv6).
pub fn format_addr(a: &SocketAddr) -> String {
    a.to_string()
}

/// The same endpoint whichever family shows it (v4-mapped IPv6 → IPv4), to match the two ends
/// of a connection across the tcp and tcp6 tables.
pub fn canonical(a: &SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// An unspecified address with port 0: a socket that is not connected (or not bound).
pub fn is_unset(a: &SocketAddr) -> bool {
    a.ip().is_unspecified() && a.port() == 0
}

pub fn tcp_state_name(st: u8) -> String {
    match st {
        0x01 => "ESTABLISHED".into(),
        0x02 => "SYN_SENT".into(),
        0x03 => "SYN_RECV".into(),
        0x04 => "FIN_WAIT1".into(),
        0x05 => "FIN_WAIT2".into(),
        0x06 => "TIME_WAIT".into(),
        0x07 => "CLOSE".into(),
        0x08 => "CLOSE_WAIT".into(),
        0x09 => "LAST_ACK".into(),
        0x0A => "LISTEN".into(),
        0x0B => "CLOSING".into(),
        0x0C => "NEW_SYN_RECV".into(),
        n => format!("state {n:#x}"),
    }
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// One socket of /proc/PID/net/unix
/// (`Num RefCount Protocol Flags Type St Inode Path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixEntry {
    /// `__SO_ACCEPTCON` (0x10000) when listening.
    pub flags: u32,
    /// SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5.
    pub kind: u16,
    /// SS_UNCONNECTED 1, SS_CONNECTING 2, SS_CONNECTED 3, SS_DISCONNECTING 4.
    pub state: u8,
    pub inode: u64,
    /// The bound name: a path, or `@name` for the abstract namespace. `None` when unbound.
    pub path: Option<String>,
}

impl UnixEntry {
    pub fn listening(&self) -> bool {
        self.flags & 0x10000 != 0
    }
    pub fn state_name(&self) -> String {
        if self.listening() {
            return "LISTEN".into();
        }
        match self.state {
            1 => "UNCONNECTED".into(),
            2 => "CONNECTING".into(),
            3 => "CONNECTED".into(),
            4 => "DISCONNECTING".into(),
            n => format!("state {n}"),
        }
    }
}

pub fn parse_unix_line(line: &str) -> Option<UnixEntry> {
    // Seven fields, then the path: the rest of the line (it may contain spaces).
    let mut fields = [""; 7];
    let mut rest = line;
    for f in fields.iter_mut() {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let [num, _refcount, _proto, flags, kind, state, inode] = fields;
    if !num.ends_with(':') {
        return None;
    }
    let path = rest.trim();
    Some(UnixEntry {
        flags: u32::from_str_radix(flags, 16).ok()?,
        kind: u16::from_str_radix(kind, 16).ok()?,
        state: u8::from_str_radix(state, 16).ok()?,
        inode: inode.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

pub fn parse_unix_table(s: &str) -> Vec<UnixEntry> {
    s.lines().filter_map(parse_unix_line).collect()
}

/// SOCK_STREAM... as a lowercase word.
pub fn sock_type_name(t: u16) -> String {
    match t {
        1 => "stream".into(),
        2 => "dgram".into(),
        3 => "raw".into(),
        4 => "rdm".into(),
        5 => "seqpacket".into(),
        n => format!("type {n}"),
    }
}

/// A socket's address family as a word (for sockets found in none of the tables).
pub fn family_name(domain: i32) -> String {
    match domain {
        libc::AF_UNIX => "unix".into(),
        libc::AF_INET => "inet".into(),
        libc::AF_INET6 => "inet6".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        libc::AF_VSOCK => "vsock".into(),
        libc::AF_BLUETOOTH => "bluetooth".into(),
        libc::AF_ALG => "alg".into(),
        libc::AF_XDP => "xdp".into(),
        n => format!("family {n}"),
    }
}

/// The inode of a `socket:[123]` / `pipe:[123]` link.
pub fn link_inode(link: &str, kind: &str) -> Option<u64> {
    link.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::End;
    use proptest::prelude::*;

    const EPOLL_FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n\
        tfd:        4 events:       19 data:                4  pos:0 ino:40f sdev:10\n\
        tfd:        7 events:     2019 data:                7  pos:0 ino:3d1ae sdev:9\n\
        tfd:        5 events: 8000001d data:     7f00dead1000  pos:0 ino:3d1ad sdev:f\n";

    #[test]
    fn epoll_interest_list() {
        let items = parse_epoll_items(EPOLL_FDINFO);
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            EpollLine {
                tfd: 4,
                events: 0x19,
                data: 4,
                ino: 0x40f,
                sdev: 0x10
            }
        );
        assert_eq!(items[1].tfd, 7);
        assert_eq!(items[1].events, 0x2019);
        assert_eq!(items[1].ino, 0x3d1ae);
        assert_eq!(items[2].events, 0x8000_001d);
        assert_eq!(items[2].data, 0x7f00_dead_1000);
        // The brief's compact form.
        let one = parse_epoll_line("tfd: 4 events: 19 data: 1000 pos:0 ino:5a43 sdev:9").unwrap();
        assert_eq!(
            (one.tfd, one.events, one.data, one.ino),
            (4, 0x19, 0x1000, 0x5a43)
        );
        assert_eq!(parse_epoll_line("pos:\t0"), None);
        assert_eq!(parse_epoll_line("tfd: x events: 19"), None);
        assert_eq!(parse_epoll_line("tfd: 3 events:"), None);
    }

    #[test]
    fn epoll_event_masks() {
        assert_eq!(decode_epoll_events(0x19), vec!["IN", "ERR", "HUP"]);
        assert_eq!(
            decode_epoll_events(0x8000_001d),
            vec!["IN", "OUT", "ERR", "HUP", "ET"]
        );
        assert_eq!(decode_epoll_events(0x2001), vec!["IN", "RDHUP"]);
        assert_eq!(
            decode_epoll_events(0x4000_0004 | 0x1000_0000),
            vec!["OUT", "EXCLUSIVE", "ONESHOT"]
        );
        assert_eq!(decode_epoll_events(0x0800), vec!["0x800"]);
        assert!(decode_epoll_events(0).is_empty());
    }

    #[test]
    fn eventfd_count_is_hex() {
        let s = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\neventfd-count:               1a\neventfd-id: 1\neventfd-semaphore: 0\n";
        assert_eq!(parse_eventfd_count(s), Some(26));
        assert_eq!(fdinfo_flags(s), Some(0o2000002));
        assert_eq!(fdinfo_ino(s), Some(1039));
        assert_eq!(parse_eventfd_count("pos: 0\n"), None);
    }

    #[test]
    fn timerfd_fdinfo() {
        let periodic = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nclockid: 1\nticks: 3\nsettime flags: 00\nit_value: (0, 4500000)\nit_interval: (0, 20000000)\n";
        let t = parse_timerfd(periodic).unwrap();
        assert_eq!(t.clockid, 1);
        assert_eq!(t.ticks, 3);
        assert_eq!(t.next_ms, Some(4.5));
        assert_eq!(t.interval_ms, Some(20.0));
        let disarmed =
            "clockid: 0\nticks: 0\nsettime flags: 01\nit_value: (0, 0)\nit_interval: (0, 0)\n";
        let t = parse_timerfd(disarmed).unwrap();
        assert_eq!((t.next_ms, t.interval_ms), (None, None));
        let oneshot = "clockid: 7\nticks: 0\nit_value: (2, 500000000)\nit_interval: (0, 0)\n";
        let t = parse_timerfd(oneshot).unwrap();
        assert_eq!(t.next_ms, Some(2500.0));
        assert_eq!(clock_name(t.clockid), "BOOTTIME");
        assert_eq!(parse_timerfd("pos: 0\n"), None);
    }

    #[test]
    fn signalfd_mask() {
        let s = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nsigmask:\t0000008000004200\n";
        assert_eq!(parse_sigmask(s), Some(vec![10, 15, 40]));
        assert_eq!(parse_sigmask("sigmask:\tzz\n"), None);
    }

    #[test]
    fn regular_file_fdinfo() {
        let s = "pos:\t1221\nflags:\t02100002\nmnt_id:\t27\nino:\t737\n";
        assert_eq!(fdinfo_pos(s), Some(1221));
        assert_eq!(End::from_flags(fdinfo_flags(s).unwrap()), End::Both);
        assert_eq!(End::from_flags(0o2000000), End::Read);
        assert_eq!(End::from_flags(0o2000001), End::Write);
        assert_eq!(fdinfo_field(s, "mnt_id"), Some("27"));
        assert_eq!(fdinfo_field(s, "nope"), None);
    }

    #[test]
    fn tcp4_lines() {
        let hdr = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_inet_line(hdr), None);
        let l = "   1: 0100007F:A2F2 0100007F:1F90 01 00000010:00000020 00:00000000 00000000  1000        0 250286 1 00000000752f83a2 20 4 30 10 -1";
        let e = parse_inet_line(l).unwrap();
        assert_eq!(format_addr(&e.local), "127.0.0.1:41714");
        assert_eq!(format_addr(&e.remote), "127.0.0.1:8080");
        assert_eq!(e.state, TCP_ESTABLISHED);
        assert_eq!(tcp_state_name(e.state), "ESTABLISHED");
        assert_eq!((e.tx_queue, e.rx_queue), (16, 32));
        assert_eq!(e.inode, 250286);
        let listen = "   0: 00000000:07E8 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1061 1 00000000d48a78c7 100 0 0 10 0";
        let e = parse_inet_line(listen).unwrap();
        assert_eq!(format_addr(&e.local), "0.0.0.0:2024");
        assert!(is_unset(&e.remote));
        assert_eq!(tcp_state_name(e.state), "LISTEN");
        assert_eq!(e.rx_queue, 2);
        let table = format!("{hdr}\n{l}\n{listen}\n");
        assert_eq!(parse_inet_table(&table).len(), 2);
    }

    #[test]
    fn tcp6_and_udp6_lines() {
        let l = "   2: 00000000000000000000000001000000:CDB5 00000000000000000000000001000000:9EC2 01 00000000:00000005 00:00000000 00000000     0        0 250744 1 00000000b6a1857a 20 4 30 10 -1";
        let e = parse_inet_line(l).unwrap();
        assert_eq!(format_addr(&e.local), "[::1]:52661");
        assert_eq!(format_addr(&e.remote), "[::1]:40642");
        assert_eq!(e.rx_queue, 5);
        // fe80::1 and a v4-mapped address
        let mapped = "   0: 0000000000000000FFFF00000100007F:1F90 000080FE000000000000000001000000:0050 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0 20 4 30 10 -1";
        let e = parse_inet_line(mapped).unwrap();
        assert_eq!(format_addr(&e.local), "[::ffff:127.0.0.1]:8080");
        assert_eq!(format_addr(&canonical(&e.local)), "127.0.0.1:8080");
        assert_eq!(format_addr(&e.remote), "[fe80::1]:80");
        let udp6 = " 7629: 00000000000000000000000001000000:8B8C 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 250289 2 0000000073312b5e 0";
        let e = parse_inet_line(udp6).unwrap();
        assert_eq!(format_addr(&e.local), "[::1]:35724");
        assert!(is_unset(&e.remote));
        assert_eq!(e.inode, 250289);
    }

    #[test]
    fn inet_addresses() {
        assert_eq!(
            parse_inet_addr("0100007F:0050").map(|a| format_addr(&a)),
            Some("127.0.0.1:80".into())
        );
        assert_eq!(
            parse_inet_addr("0101A8C0:FFFF").map(|a| format_addr(&a)),
            Some("192.168.1.1:65535".into())
        );
        assert_eq!(parse_inet_addr("0100007F"), None);
        assert_eq!(parse_inet_addr("100007F:0050"), None);
        assert_eq!(parse_inet_addr("0100007G:0050"), None);
        assert_eq!(parse_inet_addr("0100007F:10000"), None);
        assert_eq!(parse_inet_addr("ééééé:0"), None);
    }

    #[test]
    fn unix_lines() {
        let hdr = "Num       RefCount Protocol Flags    Type St Inode Path";
        assert_eq!(parse_unix_line(hdr), None);
        let listen = "00000000a8b898f3: 00000002 00000000 00010000 0001 01 250739 /tmp/us.sock";
        let e = parse_unix_line(listen).unwrap();
        assert!(e.listening());
        assert_eq!(e.state_name(), "LISTEN");
        assert_eq!(sock_type_name(e.kind), "stream");
        assert_eq!(e.inode, 250739);
        assert_eq!(e.path.as_deref(), Some("/tmp/us.sock"));
        let pair = "00000000214121ad: 00000003 00000000 00000000 0001 03 250288";
        let e = parse_unix_line(pair).unwrap();
        assert_eq!(e.state_name(), "CONNECTED");
        assert_eq!(e.path, None);
        let abstract_dgram =
            "000000001234abcd: 00000002 00000000 00000000 0002 01  9876 @/org/some name here";
        let e = parse_unix_line(abstract_dgram).unwrap();
        assert_eq!(sock_type_name(e.kind), "dgram");
        assert_eq!(e.state_name(), "UNCONNECTED");
        assert_eq!(e.inode, 9876);
        assert_eq!(e.path.as_deref(), Some("@/org/some name here"));
        assert_eq!(
            parse_unix_table(&format!("{hdr}\n{listen}\n{pair}\n")).len(),
            2
        );
    }

    #[test]
    fn links_and_formats() {
        assert_eq!(link_inode("socket:[123]", "socket"), Some(123));
        assert_eq!(link_inode("pipe:[45]", "pipe"), Some(45));
        assert_eq!(link_inode("pipe:[45]", "socket"), None);
        assert_eq!(link_inode("socket:[x]", "socket"), None);
        assert_eq!(family_name(libc::AF_NETLINK), "netlink");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_epoll_items(&s);
            let _ = parse_eventfd_count(&s);
            let _ = parse_timerfd(&s);
            let _ = parse_sigmask(&s);
            let _ = fdinfo_pos(&s);
            let _ = fdinfo_flags(&s);
            let _ = parse_inet_table(&s);
            let _ = parse_unix_table(&s);
            let _ = parse_inet_addr(&s);
            let _ = link_inode(&s, "pipe");
        }

        #[test]
        fn structured_garbage_never_panics(
            toks in proptest::collection::vec(proptest::sample::select(vec![
                "tfd:", "events:", "ino:", "data:", "0", "1f", "FFFFFFFF", "0100007F:1F90",
                "00000000000000000000000001000000:0050", "123456789012345678901", ":", "(", ")",
                ",", "é", " ", "\t", "\n", "it_value:", "0A", "00010000",
            ]), 0..40)
        ) {
            let s = toks.concat();
            let _ = parse_epoll_line(&s);
            let _ = parse_inet_line(&s);
            let _ = parse_unix_line(&s);
            let _ = parse_timerfd(&format!("clockid: 1\nit_value: {s}\n"));
        }

        #[test]
        fn inet4_roundtrip(a in any::<u32>(), port in any::<u16>()) {
            let ip = Ipv4Addr::from(a);
            let word = u32::from_ne_bytes(ip.octets());
            let s = format!("{word:08X}:{port:04X}");
            prop_assert_eq!(parse_inet_addr(&s), Some(SocketAddr::new(IpAddr::V4(ip), port)));
        }

        #[test]
        fn inet6_roundtrip(b in any::<[u8; 16]>(), port in any::<u16>()) {
            let words: String = b.chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            let s = format!("{words}:{port:04X}");
            prop_assert_eq!(parse_inet_addr(&s), Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port)));
        }

        #[test]
        fn epoll_roundtrip(tfd in 0u64..1u64<<31, ev in any::<u32>(), data in any::<u64>(), ino in any::<u64>()) {
            let l = format!("tfd: {tfd:8} events: {ev:8x} data: {data:16x}  pos:0 ino:{ino:x} sdev:9");
            let e = parse_epoll_line(&l).unwrap();
            prop_assert_eq!((e.tfd, e.events, e.data, e.ino, e.sdev), (tfd, ev, data, ino, 9));
        }
    }
}
