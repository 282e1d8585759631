//! What the tracker reports while the watch runs: one [`LiveEvent`] per line worth printing.

use crate::report::{Role, Wait};

impl LiveEvent {
    /// About a language runtime's own idle thread (a Go M parked in futex, a JVM compiler
    /// thread): not worth a line for people (the report still lists it).
    pub fn is_runtime_idle(&self) -> bool {
        matches!(
            self,
            LiveEvent::Blocked {
                role: Role::Runtime,
                ..
            } | LiveEvent::SlowCall {
                role: Role::Runtime,
                ..
            }
        )
    }
}

/// Something worth a line while the session runs.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// A thread has been blocked in a probed call for at least the threshold.
    Blocked {
        tid: u32,
        name: String,
        syscall: String,
        wait: Option<Wait>,
        blocked_ms: u64,
        at: Option<String>,
        /// A language runtime's own thread, idle where it always waits.
        role: Role,
    },
    /// A probed call returned after at least the threshold.
    SlowCall {
        tid: u32,
        name: String,
        syscall: String,
        wait: Option<Wait>,
        duration_ms: f64,
        at: Option<String>,
        role: Role,
    },
    Signal {
        pid: u32,
        signal: String,
        sender_pid: u32,
        sender_comm: String,
        first: bool,
    },
    ThreadExited {
        tid: u32,
        name: String,
        after_signal_ms: Option<i64>,
    },
    ProcessExited {
        pid: u32,
        exit_code: Option<i32>,
        killed_by: Option<String>,
        after_signal_ms: Option<i64>,
    },
    ChildStarted {
        parent: u32,
        pid: u32,
        followed: bool,
    },
    Exec {
        pid: u32,
        exe: String,
    },
    /// The kernel side dropped events since the last poll.
    Dropped {
        total: u64,
    },
}
