//! The report: what a session saw, as data. Serialized as JSON (schema
//! `stallprobe/report-v1`: fields may be added, never renamed) and rendered as text by
//! [`crate::render`].

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::{bpf::Counters, hist::CallSummary, procfs::KernelFrame};

pub const SCHEMA: &str = "stallprobe/report-v1";

pub fn ser_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// One user-stack frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    #[serde(serialize_with = "ser_hex")]
    pub addr: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    /// This function was inlined into the next frame (same address).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
    #[serde(skip)]
    pub offset: Option<u64>,
}

impl Frame {
    pub fn unknown(addr: u64) -> Frame {
        Frame {
            addr,
            function: None,
            file: None,
            line: None,
            module: None,
            inlined: false,
            offset: None,
        }
    }

    /// `function (file:line)` or `0x... (module)` for display.
    pub fn short(&self) -> String {
        let f = self.function.as_deref().unwrap_or("??");
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{f} ({}:{line})", basename(file)),
            _ => f.to_string(),
        }
    }
}

pub fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// What a blocked thread waits on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Wait {
    Futex {
        #[serde(serialize_with = "ser_hex")]
        addr: u64,
        /// e.g. `FUTEX_WAIT_PRIVATE`; for futex_waitv, `futex_waitv(N)`.
        op: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<f64>,
        /// The futex word now (for a thread join: the joined thread's tid).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u32>,
        /// What the futex is: pthread_mutex, pi_mutex, thread_join, pthread_cond, rust_mutex...
        #[serde(skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// The thread holding it (lock owner, or the thread being joined), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner_name: Option<String>,
        /// The thread that last woke waiters on this futex.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_woken_by: Option<crate::locks::Waker>,
    },
    Fd {
        fd: u64,
        /// What the fd is: `socket:[1234]`, `pipe:[56]`, `anon_inode:[eventpoll]`, a path.
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<f64>,
        /// The object behind the fd, described: socket addresses and state, pipe ends and who
        /// holds them, an epoll's interest list, ...
        #[serde(skip_serializing_if = "Option::is_none")]
        object: Option<crate::waits::FdObject>,
    },
}

impl Wait {
    /// A futex wait as the probe saw it; what the futex is and who holds it are filled in
    /// later (`locks`).
    pub fn futex(addr: u64, op: String, timeout_ms: Option<f64>, value: Option<u32>) -> Wait {
        Wait::Futex {
            addr,
            op,
            timeout_ms,
            value,
            object: None,
            owner: None,
            owner_name: None,
            last_woken_by: None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Wait::Futex {
                addr,
                op,
                object,
                owner,
                owner_name,
                ..
            } => {
                let what = match object.as_deref() {
                    Some("pthread_mutex") | Some("rust_mutex") | Some("pi_mutex") => "mutex",
                    Some("thread_join") => "join",
                    Some("pthread_cond") | Some("rust_condvar") => "condvar",
                    Some("java_monitor") => "Java monitor (synchronized)",
                    Some("java_object_wait") => "Object.wait()",
                    Some("java_park") => "LockSupport.park",
                    Some("js_atomics_wait") => "Atomics.wait",
                    _ => op.as_str(),
                };
                match (owner, what) {
                    (Some(o), "join") => {
                        format!("join of tid {o} ({})", owner_name.as_deref().unwrap_or("?"))
                    }
                    (Some(o), _) => format!(
                        "{what} {addr:#x} held by tid {o} ({})",
                        owner_name.as_deref().unwrap_or("?")
                    ),
                    (None, _) => format!("{what} {addr:#x}"),
                }
            }
            Wait::Fd {
                fd, target, object, ..
            } => match (object, target) {
                (Some(o), _) => format!("fd {fd} ({})", o.summary()),
                (None, Some(t)) => format!("fd {fd} ({t})"),
                (None, None) => format!("fd {fd}"),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadState {
    /// Asleep inside a probed blocking call.
    Blocked,
    /// On a CPU or runnable.
    Running,
    /// Asleep somewhere else (another syscall, stopped, paging).
    Sleeping,
    Exited,
}

impl ThreadState {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadState::Blocked => "blocked",
            ThreadState::Running => "running",
            ThreadState::Sleeping => "sleeping",
            ThreadState::Exited => "exited",
        }
    }
}

/// Where `blocked_ms` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockedSince {
    /// Exact: the call's entry was recorded by the probes.
    Probe,
    /// The call started before stallprobe attached; estimated from when the thread last ran.
    Sched,
    /// Started before stallprobe attached, no better estimate: at least since attach.
    Attach,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    /// The process (thread group) the thread belongs to.
    pub pid: u32,
    pub name: String,
    pub state: ThreadState,
    /// The syscall it is in (probed or not), null when running or exited.
    pub syscall: Option<String>,
    pub blocked_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_since: Option<BlockedSince>,
    pub wait: Option<Wait>,
    pub stack: Vec<Frame>,
    pub kernel_stack: Vec<KernelFrame>,
    pub blocks: BTreeMap<String, CallSummary>,
    /// `app`, or `runtime` for a language runtime's own thread idle where it always waits.
    pub role: crate::runtime::Role,
    /// Flagged by the shutdown verdict: this thread kept the process from exiting.
    pub flagged: bool,
    /// Why it was flagged (or why it was not, for runtime threads), in one line.
    pub reason: Option<String>,
    /// Probed calls that returned after the shutdown signal (the thread woke up and waited again).
    pub woke_after_signal: u32,
    /// What the thread was doing at the last look before the shutdown signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_signal: Option<AtSignal>,
    /// When the thread exited, relative to the shutdown signal (or to attach when none).
    pub exited_after_ms: Option<i64>,
    /// The thread's id inside the target's pid namespace, when it differs from `tid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<u32>,
    /// CPU time used while watched, in ms.
    pub cpu_ms: u64,
    /// Where a running thread was seen executing (user stacks sampled after the signal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spin_samples: Vec<Vec<Frame>>,
}

impl ThreadReport {
    /// A thread in `state` with nothing else known yet: no call, wait, stacks or statistics,
    /// role app, not flagged.
    pub fn new(pid: u32, tid: u32, name: String, state: ThreadState) -> ThreadReport {
        ThreadReport {
            tid,
            pid,
            name,
            state,
            syscall: None,
            blocked_ms: None,
            blocked_since: None,
            wait: None,
            stack: Vec::new(),
            kernel_stack: Vec::new(),
            blocks: BTreeMap::new(),
            role: crate::runtime::Role::App,
            flagged: false,
            reason: None,
            woke_after_signal: 0,
            at_signal: None,
            exited_after_ms: None,
            ns_tid: None,
            cpu_ms: 0,
            spin_samples: Vec::new(),
        }
    }
}

/// A thread's state at the last look before the shutdown signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtSignal {
    pub state: ThreadState,
    pub syscall: Option<String>,
    pub wait: Option<Wait>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// The language runtime detected: go, jvm, cpython, node, dotnet, tokio or native.
    pub runtime: crate::runtime::Runtime,
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
    /// Return value (negative: -errno).
    pub ret: i64,
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
    pub hook: crate::bpf::Hook,
    pub threshold_ms: f64,
    pub interval_ms: f64,
    pub watched_ms: u64,
    /// stallprobe's own peak resident memory (VmHWM), in kB.
    pub peak_rss_kb: u64,
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
    /// Wait-for cycles among the target's threads (lock-order deadlocks).
    pub deadlocks: Vec<crate::locks::Deadlock>,
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
}
