//! Writing structured entries to the systemd journal with its native protocol: one datagram
//! per entry to /run/systemd/journal/socket, `FIELD=value` lines, with the length-prefixed
//! binary form for values that contain newlines (stacks). See systemd's
//! "Native Journal Protocol" documentation.

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

use crate::report::{Report, Verdict};

/// Where journald listens (overridable for tests with `$STALLPROBE_JOURNAL_SOCKET`).
pub fn socket_path() -> PathBuf {
    std::env::var_os("STALLPROBE_JOURNAL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/systemd/journal/socket"))
}

/// Syslog priorities.
pub mod priority {
    pub const ERR: u8 = 3;
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

/// One journal entry per flagged thread and one for the verdict, with structured fields.
pub fn journal_entries(report: &Report, unit: &str) -> Vec<Vec<(&'static str, String)>> {
    let label = if unit.is_empty() {
        format!("pid {}", report.target.pid)
    } else {
        unit.to_string()
    };
    let verdict = match report.verdict {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    };
    let common = |v: &mut Vec<(&'static str, String)>| {
        v.push(("SYSLOG_IDENTIFIER", "stallprobe".into()));
        v.push(("STALLPROBE_VERDICT", verdict.into()));
        v.push(("STALLPROBE_PID", report.target.pid.to_string()));
        if !unit.is_empty() {
            v.push(("STALLPROBE_UNIT", unit.into()));
        }
        if let Some(s) = &report.shutdown {
            v.push(("STALLPROBE_SIGNAL", s.signal.clone()));
            v.push(("STALLPROBE_SIGNAL_SENDER_PID", s.sender_pid.to_string()));
        }
    };
    let mut entries = Vec::new();
    let flagged: Vec<_> = report.flagged().collect();
    let mut summary = vec![
        (
            "MESSAGE",
            format!(
                "stallprobe: {label}: shutdown {verdict}: {}",
                report.summary.first().cloned().unwrap_or_default()
            ),
        ),
        (
            "PRIORITY",
            if report.verdict == Verdict::Stalled {
                priority::ERR
            } else {
                priority::INFO
            }
            .to_string(),
        ),
        ("STALLPROBE_FLAGGED", flagged.len().to_string()),
        (
            "STALLPROBE_FLAGGED_GOROUTINES",
            report
                .flagged_groups()
                .map(|g| g.count)
                .sum::<u64>()
                .to_string(),
        ),
        ("STALLPROBE_SUMMARY", report.summary.join("\n")),
    ];
    common(&mut summary);
    entries.push(summary);
    for t in flagged {
        let stack: Vec<String> = t
            .stack
            .iter()
            .map(|f| {
                let loc = match (&f.file, f.line) {
                    (Some(file), Some(line)) => {
                        format!(" ({}:{line})", crate::report::basename(file))
                    }
                    _ => String::new(),
                };
                format!(
                    "{}{}",
                    f.function
                        .clone()
                        .unwrap_or_else(|| format!("{:#x}", f.addr)),
                    loc
                )
            })
            .collect();
        let kernel: Vec<&str> = t.kernel_stack.iter().map(|k| k.function.as_str()).collect();
        let reason = t.reason.clone().unwrap_or_default();
        let mut e = vec![
            (
                "MESSAGE",
                format!("stallprobe: {label}: tid {} ({}) {reason}", t.tid, t.name),
            ),
            ("STALLPROBE_THREAD_PID", t.pid.to_string()),
            ("PRIORITY", priority::ERR.to_string()),
            ("STALLPROBE_TID", t.tid.to_string()),
            ("STALLPROBE_THREAD", t.name.clone()),
            ("STALLPROBE_ROLE", format!("{:?}", t.role).to_lowercase()),
            ("STALLPROBE_STATE", t.state.as_str().into()),
            ("STALLPROBE_SYSCALL", t.syscall.clone().unwrap_or_default()),
            ("STALLPROBE_REASON", reason),
            ("STALLPROBE_STACK", stack.join("\n")),
            ("STALLPROBE_KERNEL_STACK", kernel.join("\n")),
        ];
        common(&mut e);
        entries.push(e);
    }
    // One entry per flagged goroutine group (Go targets).
    for g in report.flagged_groups() {
        let stack: Vec<String> = g.stack.iter().map(crate::report::Frame::short).collect();
        let reason = g.reason.clone().unwrap_or_default();
        let mut e = vec![
            (
                "MESSAGE",
                format!("stallprobe: {label}: {} {reason}", g.who()),
            ),
            ("PRIORITY", priority::ERR.to_string()),
            ("STALLPROBE_THREAD_PID", g.pid.to_string()),
            ("STALLPROBE_GOROUTINES", g.count.to_string()),
            (
                "STALLPROBE_GOIDS",
                g.goids
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("STALLPROBE_STATE", g.state.clone()),
            (
                "STALLPROBE_WAIT_REASON",
                g.wait_reason.clone().unwrap_or_default(),
            ),
            ("STALLPROBE_REASON", reason),
            ("STALLPROBE_STACK", stack.join("\n")),
        ];
        common(&mut e);
        entries.push(e);
    }
    entries
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

    #[test]
    fn flagged_goroutine_groups_are_journal_entries() {
        let r = crate::export::testutil::go_report();
        let entries = journal_entries(&r, "app.service");
        let field = |e: &Vec<(&str, String)>, k: &str| {
            e.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            field(&entries[0], "STALLPROBE_FLAGGED_GOROUTINES").as_deref(),
            Some("2001")
        );
        let groups: Vec<&Vec<(&str, String)>> = entries
            .iter()
            .filter(|e| field(e, "STALLPROBE_GOROUTINES").is_some())
            .collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            field(groups[0], "STALLPROBE_GOROUTINES").as_deref(),
            Some("2000")
        );
        assert!(
            field(groups[0], "STALLPROBE_STACK")
                .unwrap()
                .contains("main.submit (pool_gone.go:28)")
        );
        assert_eq!(
            field(groups[0], "STALLPROBE_UNIT").as_deref(),
            Some("app.service")
        );
    }
}
