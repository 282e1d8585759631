//! Goroutines of a Go target, read from its memory: each one (capped) and grouped as
//! `go tool pprof`'s debug=1 view groups them (same state, wait reason, stack and creator).

use serde::Serialize;

use super::{Frame, Role, Wait, format_ms_u64};

/// How long a goroutine has been waiting, and how we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingSince {
    /// Unchanged (same goid, state, wait reason, pc and sp) since the first look at the
    /// goroutines after stallprobe attached: waiting at least that long.
    Attach,
    /// Unchanged since a later look taken before the shutdown signal.
    BeforeSignal,
    /// Unchanged since the look taken when the shutdown signal arrived.
    Signal,
    /// From the runtime's own `g.waitsince` (set by the garbage collector).
    Gc,
    /// Only seen in the last look: at least 0.
    Look,
}

impl WaitingSince {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingSince::Attach => "attach",
            WaitingSince::BeforeSignal => "before_signal",
            WaitingSince::Signal => "signal",
            WaitingSince::Gc => "gc",
            WaitingSince::Look => "look",
        }
    }
}

/// The channel a goroutine is blocked on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChanInfo {
    #[serde(serialize_with = "super::ser_hex")]
    pub addr: u64,
    pub cap: u64,
    pub len: u64,
    pub closed: bool,
    /// Goroutines queued to send to it / receive from it.
    pub senders: u32,
    pub receivers: u32,
    /// `send`, `recv`, or `select` (the select's first channel is described).
    pub op: &'static str,
    /// Channels the goroutine's select waits on (1 for a plain send or receive).
    #[serde(skip_serializing_if = "is_one")]
    pub cases: u32,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl ChanInfo {
    /// "sending on chan 0xc000…: no goroutine receives from it".
    pub fn describe(&self) -> String {
        let what = match (self.op, self.cap) {
            ("send", 0) => "unbuffered chan".to_string(),
            (_, 0) => "unbuffered chan".to_string(),
            (_, cap) => format!("chan (cap {cap}, {} queued)", self.len),
        };
        let who = match self.op {
            "send" if self.closed => "it is closed".to_string(),
            "send" if self.receivers == 0 => "no goroutine receives from it".to_string(),
            "recv" if self.senders == 0 && !self.closed => "no goroutine sends to it".to_string(),
            "select" => format!("a select on {} channels", self.cases),
            _ => format!(
                "{} sender{}, {} receiver{} waiting",
                self.senders,
                if self.senders == 1 { "" } else { "s" },
                self.receivers,
                if self.receivers == 1 { "" } else { "s" }
            ),
        };
        format!("{what} {:#x}: {who}", self.addr)
    }
}

/// What a goroutine waits on: a channel (from the runtime's sudog), or, for a goroutine in a
/// system call, what its OS thread waits on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GoWait {
    Chan(ChanInfo),
    /// The goroutine's OS thread is in a system call: its wait as the thread view has it.
    Thread {
        tid: u32,
        syscall: Option<String>,
        wait: Option<Box<Wait>>,
    },
}

impl GoWait {
    pub fn describe(&self) -> String {
        match self {
            GoWait::Chan(c) => c.describe(),
            GoWait::Thread { tid, syscall, wait } => match (syscall, wait) {
                (Some(s), Some(w)) => format!("thread {tid} in {s} on {}", w.describe()),
                (Some(s), None) => format!("thread {tid} in {s}"),
                _ => format!("thread {tid}"),
            },
        }
    }
}

/// One goroutine.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineReport {
    /// The process it belongs to.
    pub pid: u32,
    pub goid: u64,
    /// waiting, runnable, running, syscall, ...
    pub state: String,
    /// As the target's Go version spells it ("chan send", "sync.Mutex.Lock").
    pub wait_reason: Option<String>,
    /// Waiting at least this long (see `waiting_since`); None when not waiting.
    pub waiting_ms: Option<u64>,
    pub waiting_since: Option<WaitingSince>,
    /// The OS thread it runs on or is in a system call on (as stallprobe sees tids).
    pub thread: Option<u32>,
    pub stack: Vec<Frame>,
    /// The `go` statement that created it.
    pub created_by: Option<Frame>,
    pub wait: Option<GoWait>,
    pub role: Role,
    pub flagged: bool,
    pub reason: Option<String>,
}

/// Goroutines with the same state, wait reason, stack and creator, as one line.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineGroup {
    pub pid: u32,
    pub count: u64,
    /// The first few goids.
    pub goids: Vec<u64>,
    pub state: String,
    pub wait_reason: Option<String>,
    /// The longest wait in the group.
    pub waiting_ms: Option<u64>,
    pub stack: Vec<Frame>,
    pub created_by: Option<Frame>,
    pub role: Role,
    pub flagged: bool,
    pub reason: Option<String>,
}

impl GoroutineGroup {
    /// "2000 goroutines" / "goroutine 7".
    pub fn who(&self) -> String {
        match (self.count, self.goids.first()) {
            (1, Some(g)) => format!("goroutine {g}"),
            (n, _) => format!("{n} goroutines"),
        }
    }

    /// `≥ 4s` for people (nothing when it was seen waiting in the last look only).
    pub fn waited(&self) -> Option<String> {
        self.waiting_ms
            .filter(|&ms| ms > 0)
            .map(|ms| format!("≥ {}", format_ms_u64(ms)))
    }
}
