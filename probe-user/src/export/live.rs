//! The lines printed while a watch runs, one per [`LiveEvent`] (to stderr).

use super::style::Style;
use crate::{report::format_ms, tracker::LiveEvent};

/// One line for a live event (written to stderr while the session runs).
pub fn live_line(ev: &LiveEvent, elapsed_s: f64, st: Style) -> String {
    let ts = st.dim(&format!("[{elapsed_s:>6.1}s]"));
    let at = |a: &Option<String>| a.as_ref().map(|f| format!(" at {f}")).unwrap_or_default();
    let body = match ev {
        LiveEvent::Blocked {
            tid,
            name,
            syscall,
            wait,
            blocked_ms,
            at: a,
            ..
        } => format!(
            "tid {tid} {} {} in {syscall}{} for {}{}",
            st.bold(name),
            st.yellow("blocked"),
            wait.as_ref()
                .map(|w| format!(" on {}", w.describe()))
                .unwrap_or_default(),
            format_ms(*blocked_ms as f64),
            at(a)
        ),
        LiveEvent::SlowCall {
            tid,
            name,
            syscall,
            wait,
            duration_ms,
            at: a,
            ..
        } => format!(
            "tid {tid} {} slow {syscall}{} returned after {}{}",
            st.bold(name),
            wait.as_ref()
                .map(|w| format!(" on {}", w.describe()))
                .unwrap_or_default(),
            format_ms(*duration_ms),
            at(a)
        ),
        LiveEvent::Signal {
            pid,
            signal,
            sender_pid,
            sender_comm,
            first,
        } => format!(
            "{} to pid {pid} from pid {sender_pid} ({sender_comm}){}",
            st.cyan(signal),
            if *first { ": grace period starts" } else { "" }
        ),
        LiveEvent::ThreadExited {
            tid,
            name,
            after_signal_ms,
            ..
        } => format!(
            "thread {tid} {name} exited{}",
            after_signal_ms
                .map(|ms| format!(" (t0+{ms}ms)"))
                .unwrap_or_default()
        ),
        LiveEvent::ProcessExited {
            pid,
            exit_code,
            killed_by,
            after_signal_ms,
        } => format!(
            "process {pid} exited{}{}",
            match (exit_code, killed_by) {
                (Some(c), _) => format!(" with code {c}"),
                (None, Some(s)) => format!(", killed by {s}"),
                _ => String::new(),
            },
            after_signal_ms
                .map(|ms| format!(" (t0+{ms}ms)"))
                .unwrap_or_default()
        ),
        LiveEvent::ChildStarted {
            parent,
            pid,
            followed,
        } => format!(
            "pid {parent} started child process {pid}{}",
            if *followed {
                " (followed)"
            } else {
                " (not followed: use --follow-children)"
            }
        ),
        LiveEvent::Exec { pid, exe } => format!("pid {pid} exec'd {exe}"),
        LiveEvent::Dropped { total } => st.red(&format!(
            "the kernel side dropped events ({total} so far): the report will be incomplete"
        )),
    };
    format!("{} {ts} {body}", st.dim("stallprobe"))
}
