//! sd_notify(3) without libsystemd: READY=1, STATUS=..., WATCHDOG=1 datagrams to
//! `$NOTIFY_SOCKET` (a path, or an abstract socket when it starts with `@`).

use std::{os::unix::net::UnixDatagram, time::Duration};

pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// Half of `$WATCHDOG_USEC`, when the service manager asked for keep-alives.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// `None` when not started by a service manager that wants notifications.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET").ok()?;
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
        };
        let sock = UnixDatagram::unbound().ok()?;
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .filter(|_| {
                // WATCHDOG_PID, when set, must be us.
                std::env::var("WATCHDOG_PID")
                    .map(|p| p == std::process::id().to_string())
                    .unwrap_or(true)
            })
            .map(|us| Duration::from_micros(us / 2));
        Some(Notifier {
            sock,
            addr,
            watchdog_every,
        })
    }

    pub fn send(&self, state: &str) {
        let _ = self.sock.send_to_addr(state.as_bytes(), &self.addr);
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}
