//! Writing structured entries to the systemd journal with its native protocol: one datagram
//! per entry to /run/systemd/journal/socket, `FIELD=value` lines, with the length-prefixed
//! binary form for values that contain newlines (stacks). See systemd's
//! "Native Journal Protocol" documentation.

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

/// Where journald listens (overridable for tests with `$STALLPROBE_JOURNAL_SOCKET`).
pub fn socket_path() -> PathBuf {
    std::env::var_os("STALLPROBE_JOURNAL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/systemd/journal/socket"))
}

/// Syslog priorities.
pub mod priority {
    pub const ERR: u8 = 3;
    pub const WARNING: u8 = 4;
    pub const NOTICE: u8 = 5;
    pub const INFO: u8 = 6;
}

/// Encode one entry. Field names must be uppercase letters, digits and underscores, not
/// starting with an underscore (journald drops others); they are sanitised here.
pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let key = key.trim_start_matches('_');
        if key.is_empty() {
            continue;
        }
        out.extend_from_slice(key.as_bytes());
        if v.contains('\n') {
            // KEY\n<little-endian u64 length><value>\n
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        } else {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// A connection to journald.
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// `None` when there is no journal to talk to.
    pub fn connect() -> Option<Journal> {
        let path = socket_path();
        if !Path::new(&path).exists() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        Some(Journal { sock, path })
    }

    pub fn send(&self, fields: &[(&str, String)]) -> io::Result<()> {
        let data = encode(fields);
        match self.sock.send_to(&data, &self.path) {
            Ok(_) => Ok(()),
            // Too large for a datagram: journald accepts a memfd instead; keep it simple and
            // cut the biggest field (a stack) rather than lose the entry.
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                let trimmed: Vec<(&str, String)> = fields
                    .iter()
                    .map(|(k, v)| (*k, v.chars().take(16 * 1024).collect()))
                    .collect();
                self.sock.send_to(&encode(&trimmed), &self.path).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_binary_fields() {
        let e = encode(&[
            ("MESSAGE", "hello".into()),
            ("STALLPROBE_STACK", "a\nb".into()),
            ("bad-key", "x".into()),
        ]);
        let mut want = b"MESSAGE=hello\nSTALLPROBE_STACK\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nBAD_KEY=x\n");
        assert_eq!(e, want);
    }

    #[test]
    fn underscore_prefixed_keys_are_trusted_fields_and_not_sent() {
        let e = encode(&[("_PID", "1".into())]);
        assert_eq!(e, b"PID=1\n");
    }
}
