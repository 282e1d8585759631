//! The one-line status of a long watch (`--pid`, `watch`) on a terminal: threads watched,
//! blocked past the threshold, flagged (blocked past the threshold, not a runtime's own idle
//! thread: what a shutdown now would name). Redrawn in place on stderr (`\r` + erase line);
//! cleared before any other line is printed, so live lines and the report stay clean. Never
//! drawn when stderr is not a terminal (logs, journald, CI) or with `--quiet`.

use std::io::Write as _;

use super::style::Style;
use crate::tracker::Census;

/// What the status line counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub processes: usize,
    pub threads: u64,
    pub blocked: u64,
    pub flagged: u64,
}

impl Counts {
    pub fn from_census(c: &Census, processes: usize) -> Counts {
        Counts {
            processes,
            threads: c.threads.values().sum(),
            blocked: c.blocked.values().sum(),
            flagged: c
                .blocked
                .iter()
                .filter(|((_, role), _)| *role != crate::report::Role::Runtime.as_str())
                .map(|(_, n)| n)
                .sum(),
        }
    }
}

/// The status text (no line end, no erase codes).
pub fn status_text(c: Counts, elapsed_s: f64, st: Style) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let flagged = format!("{} flagged", c.flagged);
    format!(
        "{} {} {} watched in {}, {} blocked, {}",
        st.dim("stallprobe"),
        st.dim(&format!("[{elapsed_s:>6.1}s]")),
        plural(c.threads, "thread", "threads"),
        plural(c.processes as u64, "process", "processes"),
        c.blocked,
        if c.flagged > 0 {
            st.red(&flagged)
        } else {
            flagged
        }
    )
}

/// The line on stderr, when there is one to draw.
pub struct StatusLine {
    enabled: bool,
    drawn: bool,
}

impl StatusLine {
    /// `enabled`: the mode wants one, stderr is a terminal and `--quiet` is off.
    pub fn new(enabled: bool) -> StatusLine {
        StatusLine {
            enabled,
            drawn: false,
        }
    }

    /// Replace the line (or draw it) with `text`.
    pub fn draw(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{text}");
        let _ = e.flush();
        self.drawn = true;
    }

    /// Erase it, before anything else goes to the terminal.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.drawn = false;
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flag_only_application_threads() {
        let mut c = Census::default();
        c.threads.insert("blocked", 5);
        c.threads.insert("running", 2);
        c.blocked.insert(("futex", "runtime"), 3);
        c.blocked.insert(("read", "app"), 1);
        let n = Counts::from_census(&c, 2);
        assert_eq!(
            n,
            Counts {
                processes: 2,
                threads: 7,
                blocked: 4,
                flagged: 1
            }
        );
        assert_eq!(
            status_text(n, 12.34, Style { color: false }),
            "stallprobe [  12.3s] 7 threads watched in 2 processes, 4 blocked, 1 flagged"
        );
        let one = Counts {
            processes: 1,
            threads: 1,
            blocked: 0,
            flagged: 0,
        };
        assert_eq!(
            status_text(one, 0.0, Style { color: false }),
            "stallprobe [   0.0s] 1 thread watched in 1 process, 0 blocked, 0 flagged"
        );
        assert!(status_text(n, 1.0, Style { color: true }).contains("\x1b[1;31m1 flagged\x1b[0m"));
    }
}
