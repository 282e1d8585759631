//! A thread in the report: its state, what it waits on, its stacks and statistics.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Wait, basename};

/// The language of a frame that a runtime's interpreter or JIT runs (native frames have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// A Python function, read from the interpreter's frame chain.
    Python,
    /// A Java method, from the JVM's thread dump.
    Java,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Java => "java",
        }
    }
}

/// One user-stack frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    #[serde(serialize_with = "super::ser_hex")]
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
    /// `python` or `java` for a frame of the program's own language, placed where the
    /// interpreter or JIT runs it; absent for native frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<Lang>,
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
            lang: None,
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

/// A kernel stack frame, symbolized from kallsyms (or read from /proc/PID/task/TID/stack).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelFrame {
    /// 0 when only the name is known (/proc/PID/task/TID/stack zeroes addresses).
    #[serde(serialize_with = "super::ser_hex")]
    pub addr: u64,
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// count, total and percentiles of one call's block times (JSON `blocks.<call>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CallSummary {
    pub count: u64,
    pub total_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Application code (or unknown): blocked past shutdown means a stall.
    #[default]
    App,
    /// A runtime's own thread (scheduler, GC, compiler, timer) waiting where it always waits.
    Runtime,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Runtime => "runtime",
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
    pub role: Role,
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
    /// What the language runtime says about this thread: why it has no Python frames, its Java
    /// state, how its frames were placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang_note: Option<String>,
    /// Locks the runtime says this thread holds (Java monitors: `<0x…> (a java.lang.Object)`;
    /// `the GIL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
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
            role: Role::App,
            flagged: false,
            reason: None,
            woke_after_signal: 0,
            at_signal: None,
            exited_after_ms: None,
            ns_tid: None,
            cpu_ms: 0,
            spin_samples: Vec::new(),
            lang_note: None,
            holds: Vec::new(),
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
