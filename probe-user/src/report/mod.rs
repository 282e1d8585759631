//! The report: what a session saw, as data. Every type serialized in schema
//! `stallprobe/report-v1` is defined here (fields may be added, never renamed or removed: the
//! golden test in `assemble/golden.rs` checks it, against `golden-report-v1.json` here), with the one-line descriptions people read. The
//! modules that find things out (`waits`, `locks`, `stack`, `bpf` ...) fill these types in;
//! `crate::assemble` builds the report; `crate::export` writes it out.

mod deadlock;
mod fd;
mod format;
mod goroutine;
mod thread;
mod wait;

use serde::Serialize;

pub use deadlock::{CycleObject, CycleThread, Deadlock};
pub use fd::{End, EpollItem, FdObject, Holder, Pipe, Socket, SocketPeer};
pub use format::{basename, clean, format_bytes, format_ms, format_ms_u64, ser_hex, target_text};
pub use goroutine::{ChanInfo, GoWait, GoroutineGroup, GoroutineReport, WaitingSince};
pub use thread::{
    AtSignal, BlockedSince, CallSummary, Frame, KernelFrame, Lang, Role, ThreadReport, ThreadState,
};
pub use wait::{Wait, Waker};

pub const SCHEMA: &str = "stallprobe/report-v1";

/// The language runtime a process runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// C, C++, Rust without a detected async runtime, or anything unrecognised.
    #[default]
    Native,
    Go,
    Jvm,
    CPython,
    Node,
    Dotnet,
    Tokio,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Go => "go",
            Runtime::Jvm => "jvm",
            Runtime::CPython => "cpython",
            Runtime::Node => "node",
            Runtime::Dotnet => "dotnet",
            Runtime::Tokio => "tokio",
        }
    }
}

/// Where the blocking-call probes were hooked in (see probe-ebpf/src/programs/hooks.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// fentry/fexit on each probed syscall.
    Fentry,
    /// BTF raw tracepoints sys_enter/sys_exit.
    Raw,
    /// syscalls:sys_enter_*/sys_exit_* tracepoints.
    Tracepoint,
    /// BTF tracepoint sched_switch: a block is a sleep inside a probed call.
    Sched,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Fentry => "fentry",
            Hook::Raw => "raw",
            Hook::Tracepoint => "tracepoint",
            Hook::Sched => "sched",
        }
    }
}

/// Totals of the kernel side's counters (summed over CPUs): what it sent and what it lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub dropped_slow_calls: u64,
    pub dropped_signals: u64,
    pub dropped_thread_exits: u64,
    pub dropped_lifecycle: u64,
    pub task_storage_failures: u64,
    pub stack_copy_failures: u64,
    pub slow_calls: u64,
    pub signals: u64,
}

impl Counters {
    /// Events lost for lack of room (ring buffer full or storage unavailable).
    pub fn dropped(&self) -> u64 {
        self.dropped_slow_calls
            + self.dropped_signals
            + self.dropped_thread_exits
            + self.dropped_lifecycle
            + self.task_storage_failures
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// The language runtime detected: go, jvm, cpython, node, dotnet, tokio or native.
    pub runtime: Runtime,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    pub exited: bool,
    /// Exit code when it exited normally (known for `stallprobe run`, or from a zombie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it, when it did not exit normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// The Go version the target was built with (Go targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_version: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlowCallReport {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
    pub syscall: String,
    pub wait: Option<Wait>,
    pub duration_ms: f64,
    /// When it returned, ms after stallprobe attached.
    pub ended_at_ms: i64,
    /// Return value (negative: -errno); 0 when `ret_known` is false.
    pub ret: i64,
    /// False with the scheduler hook (`session.hook` "sched"): it sees the thread wake up, not
    /// the call return.
    pub ret_known: bool,
    pub stack: Vec<Frame>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A shutdown signal came and every process exited within the grace period.
    Clean,
    /// A shutdown signal came and at least one thread kept the process alive past grace.
    Stalled,
    /// No shutdown signal was seen: a report of what was observed.
    Observed,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShutdownReport {
    pub signal: String,
    pub sender_pid: u32,
    pub sender_comm: String,
    pub grace_ms: u64,
    pub process_exited: bool,
    pub exited_after_ms: Option<i64>,
    /// ms after attach when the signal came.
    pub at_ms: i64,
    /// The signal was ignored by the process (SIG_IGN) or blocked in every thread.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
}

impl ShutdownReport {
    /// How the episode ended, for people: "exited 20ms after it" or "still alive when the 2s
    /// grace period ran out".
    pub fn outcome(&self) -> String {
        if self.process_exited {
            match self.exited_after_ms {
                Some(ms) => format!("exited {} after it", format::format_ms(ms.max(0) as f64)),
                None => "exited".to_string(),
            }
        } else {
            format!(
                "still alive when the {} grace period ran out",
                format::format_ms(self.grace_ms as f64)
            )
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TimelineEntry {
    /// ms relative to the first shutdown signal (negative: before it), or to attach.
    pub t_ms: i64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub stallprobe_version: &'static str,
    pub hook: Hook,
    pub threshold_ms: f64,
    pub interval_ms: f64,
    pub watched_ms: u64,
    /// stallprobe's own peak resident memory (VmHWM), in kB.
    pub peak_rss_kb: u64,
    /// The longest read of a Go target's goroutines, in ms (Go targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutine_read_ms: Option<u64>,
    pub probed_calls: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unprobed_calls: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: TargetInfo,
    /// Child processes followed with `--follow-children`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TargetInfo>,
    pub verdict: Verdict,
    pub shutdown: Option<ShutdownReport>,
    /// One line per flagged thread (or the reason nothing was flagged).
    pub summary: Vec<String>,
    pub threads: Vec<ThreadReport>,
    /// Goroutines of Go targets, read from their memory (at most a few thousand listed:
    /// `goroutines_total` counts them all; the groups cover all of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goroutines: Vec<GoroutineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines_total: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goroutine_groups: Vec<GoroutineGroup>,
    /// Wait-for cycles among the target's threads (lock-order deadlocks).
    pub deadlocks: Vec<Deadlock>,
    pub slow_calls: Vec<SlowCallReport>,
    /// Slow calls seen in all (the list above keeps the first ones).
    pub slow_calls_total: u64,
    pub timeline: Vec<TimelineEntry>,
    /// Events the kernel side could not deliver (ring buffer or storage full). Non-zero means
    /// the report is incomplete; `drops` says which kind.
    pub dropped_events: u64,
    pub drops: Counters,
    pub session: SessionInfo,
    pub notes: Vec<String>,
}

impl Report {
    pub fn flagged(&self) -> impl Iterator<Item = &ThreadReport> {
        self.threads.iter().filter(|t| t.flagged)
    }

    pub fn flagged_groups(&self) -> impl Iterator<Item = &GoroutineGroup> {
        self.goroutine_groups.iter().filter(|g| g.flagged)
    }
}
