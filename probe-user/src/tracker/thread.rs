//! What the tracker keeps per thread between looks.

use probe_ebpf::{TaskState, UserRegs};

use crate::{
    events::CallRecord,
    report::{AtSignal, BlockedSince, Frame, ThreadState},
    stack::Stacks,
};

/// Identity of one block: the same call, object and start means the same block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockKey {
    pub nr: u32,
    pub obj: u64,
    pub start_ns: u64,
}

/// When the current block (or sleep) started, and how we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since {
    pub start_ns: u64,
    pub how: BlockedSince,
}

/// What a thread was doing at the last look.
#[derive(Clone, Debug)]
pub struct Observation {
    pub state: ThreadState,
    /// Syscall number it is in (probed or not).
    pub nr: Option<u32>,
    pub args: [u64; 6],
    /// The probed call it is blocked in.
    pub call: Option<CallRecord>,
    pub since: Option<Since>,
    pub regs: UserRegs,
    /// Kernel stack addresses from the snapshot (sleeping threads).
    pub kstack: Vec<u64>,
}

impl Observation {
    /// A thread on a CPU (or runnable).
    pub fn running(regs: UserRegs, kstack: Vec<u64>) -> Observation {
        Observation {
            state: ThreadState::Running,
            nr: None,
            args: [0; 6],
            call: None,
            since: None,
            regs,
            kstack,
        }
    }

    pub fn block_key(&self) -> Option<BlockKey> {
        let since = self.since?;
        Some(BlockKey {
            nr: self.nr?,
            obj: self.call.map(|c| c.obj).unwrap_or(self.args[0]),
            start_ns: since.start_ns,
        })
    }
}

/// How often a thread woke futex waiters, and when that count last changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakes {
    pub count: u64,
    /// CLOCK_MONOTONIC ns of the look that saw the count change (to the snapshot interval).
    pub changed_ns: u64,
}

/// A thread's CPU use at one look after the shutdown signal (/proc/PID/task/TID/schedstat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    pub at_ns: u64,
    /// ns on a CPU so far.
    pub run_ns: u64,
    /// ns waiting for a CPU so far.
    pub wait_ns: u64,
}

/// The top of a thread's user stack, copied at a look while it was blocked (for the slow-call
/// event of that block, which the scheduler hook may send without one).
#[derive(Clone, Debug)]
pub struct StackCopy {
    pub key: BlockKey,
    pub regs: UserRegs,
    pub bytes: Vec<u8>,
}

/// Stacks taken for one block (or one look, for a thread not blocked).
#[derive(Clone, Debug)]
pub struct StacksAt {
    pub key: Option<BlockKey>,
    pub stacks: Stacks,
}

pub struct ThreadTrack {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
    pub ns_tid: Option<u32>,
    pub stats: Option<Box<TaskState>>,
    pub obs: Option<Observation>,
    pub exited_ns: Option<u64>,
    /// The kernel's exit event for this thread was processed.
    pub exit_event_seen: bool,
    /// The block last announced live (crossed the threshold).
    pub announced: Option<BlockKey>,
    pub stacks: Option<StacksAt>,
    /// The current block's stack bytes, when it may become a slow call without a stack.
    pub stack_copy: Option<StackCopy>,
    /// Its state at the last look before the first shutdown signal.
    pub at_signal: Option<AtSignal>,
    pub wakes: Wakes,
    /// `sched_info.last_arrival` and the call in flight at the last look.
    pub last_arrival: u64,
    pub last_in_flight: Option<CallRecord>,
    pub first_cpu_ticks: Option<u64>,
    pub cpu_ticks: u64,
    /// One per look after the shutdown signal, for spin detection.
    pub cpu_after_signal: Vec<CpuSample>,
    /// Where it ran, sampled after the shutdown signal while running.
    pub spin_samples: Vec<Vec<Frame>>,
}

impl ThreadTrack {
    pub fn new(tid: u32, pid: u32, name: &str, ns_tid: Option<u32>) -> ThreadTrack {
        ThreadTrack {
            tid,
            pid,
            name: name.to_string(),
            ns_tid,
            stats: None,
            obs: None,
            exited_ns: None,
            exit_event_seen: false,
            announced: None,
            stacks: None,
            stack_copy: None,
            at_signal: None,
            wakes: Wakes::default(),
            last_arrival: 0,
            last_in_flight: None,
            first_cpu_ticks: None,
            cpu_ticks: 0,
            cpu_after_signal: Vec::new(),
            spin_samples: Vec::new(),
        }
    }

    /// Share of the time since the signal that the thread was runnable: on a CPU or waiting
    /// for one (1.0 = it never slept). Waiting counts so that a spinner on a busy machine,
    /// which gets only part of a CPU, is still recognised.
    pub fn runnable_share(&self) -> f64 {
        match (self.cpu_after_signal.first(), self.cpu_after_signal.last()) {
            (Some(a), Some(b)) if b.at_ns > a.at_ns + 50_000_000 => {
                let busy = b.run_ns.saturating_sub(a.run_ns) + b.wait_ns.saturating_sub(a.wait_ns);
                (busy as f64 / (b.at_ns - a.at_ns) as f64).min(1.0)
            }
            _ => 0.0,
        }
    }
}
