//! Go goroutines read from outside a live Go process (Go 1.17+, x86-64): no ptrace stop, no
//! writes, only reads of the target's memory.
//!
//! [`GoBinary::parse`] reads the executable once (version, pclntab, where the goroutine list
//! lives, `runtime.g` field offsets); [`GoReader::snapshot`] reads the goroutines of a running
//! process through a [`Memory`](crate::mem::Memory).

mod binary;
mod buildinfo;
mod chan;
mod dwarf;
mod elf;
mod error;
mod goroutines;
mod layout;
mod moduledata;
mod pclntab;
mod role;
mod stack;
mod symbols;
#[cfg(test)]
mod tests;
mod types;
mod x86;

use std::sync::Arc;

pub use binary::{GoBinary, layout_from_both};
pub use buildinfo::GoVersion;
pub use elf::{load_bias, process_load_bias};
pub use error::GoError;
pub use goroutines::GoReader;
pub use role::{GoRole, role_of};

/// The Go tables on their own, for stallprobe's `go_tables` fuzz target (faster than parsing
/// a whole executable): `data` as a pclntab (functions, names, pc-value tables, file and line,
/// inline trees read from `data` itself as if it were mapped at 0) and as a build-info blob.
/// Not an API.
#[doc(hidden)]
pub fn fuzz_tables(data: &[u8]) {
    let read = |addr: u64, len: usize| -> Option<Vec<u8>> {
        let start = usize::try_from(addr).ok()?;
        Some(data.get(start..start.checked_add(len)?)?.to_vec())
    };
    let _ = buildinfo::parse_header(data, read);
    if let Ok(text) = std::str::from_utf8(data.get(..64).unwrap_or(data)) {
        let _ = GoVersion::parse(text);
    }
    let Ok(t) = pclntab::Pclntab::parse(data.to_vec(), Some(0x40_0000)) else {
        return;
    };
    let words: Vec<u64> = data
        .rchunks_exact(8)
        .take(4)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .collect();
    let mut pcs: Vec<u64> = Vec::new();
    if let Some((lo, hi)) = t.text_range() {
        let span = hi.saturating_sub(lo).max(1);
        pcs.extend(words.iter().map(|w| lo.wrapping_add(w % span)));
        pcs.push(lo);
        pcs.push(hi.wrapping_sub(1));
    }
    pcs.extend(&words);
    for i in 0..64 {
        let Some(f) = t.func_at_index(i) else {
            break;
        };
        let _ = t.func_name(&f);
        pcs.push(f.entry);
    }
    for pc in pcs {
        let _ = t.frames(pc, Some(0), &read);
        if let Some(f) = t.find_func(pc) {
            let _ = (t.spdelta(&f, pc), t.file_line(&f, pc));
        }
    }
    let _ = t.func_by_name("runtime.goexit");
}

/// One frame of a goroutine's stack, innermost first; inlined calls are frames of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    /// The pc as found (a return address for callers; unrelocated: binary addresses).
    pub pc: u64,
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    /// Inlined into the next (outer) frame, which has the same pc.
    pub inlined: bool,
}

/// A goroutine's scheduling state (`g.atomicstatus` without the scan bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GStatus {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Copystack,
    Preempted,
    /// A status this reader does not name (e.g. `_Gleaked` = 10 on Go 1.26+).
    Other(u32),
}

impl GStatus {
    /// Decode a raw `atomicstatus`; `None` for `_Gdead` (and Go 1.26's `_Gdeadextra`).
    pub fn decode(raw: u32) -> Option<GStatus> {
        const SCAN: u32 = 0x1000;
        Some(match raw & !SCAN {
            0 => GStatus::Idle,
            1 => GStatus::Runnable,
            2 => GStatus::Running,
            3 => GStatus::Syscall,
            4 => GStatus::Waiting,
            6 | 11 => return None,
            8 => GStatus::Copystack,
            9 => GStatus::Preempted,
            n => GStatus::Other(n),
        })
    }

    pub fn name(&self) -> String {
        match self {
            GStatus::Idle => "idle".into(),
            GStatus::Runnable => "runnable".into(),
            GStatus::Running => "running".into(),
            GStatus::Syscall => "syscall".into(),
            GStatus::Waiting => "waiting".into(),
            GStatus::Copystack => "copystack".into(),
            GStatus::Preempted => "preempted".into(),
            GStatus::Other(10) => "leaked".into(),
            GStatus::Other(n) => format!("other({n})"),
        }
    }
}

/// What a goroutine waits on, for channel operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanOp {
    Send,
    Recv,
    Select,
}

/// The channel a goroutine is blocked on (for a select: the first case's channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChanWait {
    /// The channel's address in the target.
    pub addr: u64,
    pub cap: u64,
    pub len: u64,
    pub closed: bool,
    /// Goroutines queued to send / receive (walk capped at [`Limits::max_waiters`]).
    pub senders: u32,
    pub receivers: u32,
    pub op: ChanOp,
    /// Channels this goroutine's select waits on (1 for a plain send/receive).
    pub cases: u32,
}

/// Same key in two snapshots ⇒ the goroutine did not move in between (it has been waiting at
/// least since the first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub goid: u64,
    pub status: GStatus,
    pub wait_reason: Option<Arc<str>>,
    pub sched_pc: u64,
    pub sched_sp: u64,
}

/// One goroutine.
#[derive(Clone, Debug)]
pub struct Goroutine {
    pub goid: u64,
    /// The g's address in the target.
    pub addr: u64,
    pub status: GStatus,
    /// As the target's own `runtime.waitReasonStrings` spells it ("chan send"); shared
    /// between the goroutines that wait for the same reason.
    pub wait_reason: Option<Arc<str>>,
    /// `g.waitsince` (nanotime; set only by the GC, often 0: use [`GoroutineKey`] instead).
    pub waitsince_ns: i64,
    /// The OS thread (m.procid) running it or blocked in its syscall.
    pub thread: Option<u32>,
    /// Innermost first; empty for a running goroutine (its registers are in its thread).
    /// Shared between goroutines with the same stack (thousands of identical leaked goroutines
    /// cost one copy).
    pub stack: Arc<[GoFrame]>,
    /// The `go` statement that created it (`gopc - 1` symbolized).
    pub created_by: Option<GoFrame>,
    /// Its start function.
    pub start_fn: Option<Arc<str>>,
    /// Go 1.21+.
    pub parent_goid: Option<u64>,
    pub wait: Option<ChanWait>,
    pub key: GoroutineKey,
    pub role: GoRole,
    /// Why the stack is short or empty, when it is.
    pub stack_note: Option<&'static str>,
}

/// Bounds for one snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most goroutines read (allglen above this is refused as garbage).
    pub max_goroutines: usize,
    /// Most frames per stack.
    pub max_frames: usize,
    /// Most sudogs followed in one channel queue (or select list).
    pub max_waiters: u32,
    /// Read stacks (off: goroutines with status, wait and creator only).
    pub stacks: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_goroutines: 10_000_000,
            max_frames: 256,
            max_waiters: 10_000,
            stacks: true,
        }
    }
}

/// All goroutines at one moment.
#[derive(Clone, Debug, Default)]
pub struct GoSnapshot {
    /// Live goroutines (dead ones skipped), in allgs order.
    pub goroutines: Vec<Goroutine>,
    /// Entries in the runtime's goroutine list (dead ones included).
    pub total: usize,
    /// Entries that could not be read or did not validate (after one re-read).
    pub unreadable: usize,
    /// What degraded and why (for the report's notes).
    pub notes: Vec<String>,
}
