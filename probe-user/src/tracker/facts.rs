//! What the tracker knows about each thread right now, as plain facts for judgement and the
//! report ([`ThreadFacts`]), and the helpers that describe a call and what it waits on.

use std::collections::BTreeMap;

use probe_ebpf::{Call, futex_op};

use super::{Tracker, host::Host, thread::Observation, thread::StacksAt};
use crate::{
    clock::{diff_ms, realtime_ns},
    events::{CallRecord, Timeout},
    hist,
    report::{AtSignal, BlockedSince, CallSummary, Frame, KernelFrame, ThreadState, Wait},
    syscalls,
};

/// One thread (live or exited) as of now: everything but the judgement.
#[derive(Clone, Debug)]
pub struct ThreadFacts {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
    pub state: ThreadState,
    /// The syscall it is in (probed or not); None when running or exited.
    pub syscall: Option<String>,
    pub blocked_ms: Option<u64>,
    pub blocked_since: Option<BlockedSince>,
    /// What it waits on, as the probes and /proc say (lock owners and fd objects are added
    /// by the assembler from their findings).
    pub wait: Option<Wait>,
    pub stack: Vec<Frame>,
    pub kernel_stack: Vec<KernelFrame>,
    pub blocks: BTreeMap<String, CallSummary>,
    pub woke_after_signal: u32,
    pub at_signal: Option<AtSignal>,
    /// When it exited, relative to the first shutdown signal (or to attach when none).
    pub exited_after_ms: Option<i64>,
    pub ns_tid: Option<u32>,
    /// CPU time used while watched.
    pub cpu_ms: u64,
    pub spin_samples: Vec<Vec<Frame>>,
    /// Share of the time since the signal it was runnable (0 without a signal).
    pub runnable_share: f64,
    /// The futex it last woke waiters on, and when (to the snapshot interval).
    pub last_wake: Option<LastWake>,
    /// What the language runtime says about it (see [`crate::report::ThreadReport::lang_note`]).
    pub lang_note: Option<String>,
    /// Locks the runtime says it holds.
    pub holds: Vec<String>,
}

impl ThreadFacts {
    /// A thread in `state` with nothing else known yet (tests, and the fuzz targets'
    /// threads).
    pub fn new(pid: u32, tid: u32, name: String, state: ThreadState) -> ThreadFacts {
        ThreadFacts {
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
            woke_after_signal: 0,
            at_signal: None,
            exited_after_ms: None,
            ns_tid: None,
            cpu_ms: 0,
            spin_samples: Vec::new(),
            runnable_share: 0.0,
            last_wake: None,
            lang_note: None,
            holds: Vec::new(),
        }
    }
}

/// "Who last woke the waiters of this futex": this thread, at about this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastWake {
    pub addr: u64,
    pub at_ns: u64,
}

impl Tracker {
    /// Before a report: stacks for live threads that lack one for their current state (only
    /// threads asleep past the threshold when there are more than `max_stacks`), and CPU time
    /// used. Returns a note when stacks were limited.
    pub fn prepare_report(
        &mut self,
        now: u64,
        host: &mut dyn Host,
        max_stacks: usize,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        if self.slow_calls_without_stack > 0 {
            notes.push(format!(
                "{} slow call(s) without a stack: the scheduler hook copies a stack at the \
                 wake-up only when the CPU has the process's memory mapped, and no look saw the \
                 call blocked (lower --interval, or raise --threshold above it)",
                self.slow_calls_without_stack
            ));
        }
        for t in self.threads.values_mut() {
            if let Some(ticks) = host.cpu_ticks(t.pid, t.tid) {
                t.cpu_ticks = ticks;
            }
        }
        self.final_go_looks(now, host);
        let live = self.threads.len();
        let threshold = self.cfg.threshold_ns;
        for t in self.threads.values_mut() {
            let Some(obs) = &t.obs else { continue };
            let key = obs.block_key();
            let have = t.stacks.as_ref().is_some_and(|s| s.key == key);
            let long = obs
                .since
                .is_some_and(|s| now.saturating_sub(s.start_ns) >= threshold);
            if have || (live > max_stacks && !long) {
                continue;
            }
            let stacks = host.stacks(t.pid, t.tid, obs.regs, &obs.kstack);
            t.stacks = Some(StacksAt { key, stacks });
        }
        if live > max_stacks {
            notes.push(format!(
                "{live} live threads: stacks only for threads asleep for at least the threshold (raise with --max-stacks)"
            ));
        }
        notes
    }

    /// Every thread seen, live then exited, sorted by (pid, tid).
    pub fn thread_facts(&self, now: u64, host: &dyn Host, clk_tck: u64) -> Vec<ThreadFacts> {
        let shutdown_ts = self.shutdown_signal().map(|s| s.ts_ns);
        let rel = |ts: u64| diff_ms(ts, shutdown_ts.unwrap_or(self.attach_ns));
        let clk = clk_tck.max(1);
        let mut out: Vec<ThreadFacts> = self
            .all_tracks()
            .map(|t| {
                let obs = t.obs.as_ref();
                let state = if t.exited_ns.is_some() {
                    ThreadState::Exited
                } else {
                    obs.map(|o| o.state).unwrap_or(ThreadState::Sleeping)
                };
                let alive = state != ThreadState::Exited;
                let (syscall, blocked_ms, blocked_since, wait) = match obs {
                    Some(o) if alive && o.state != ThreadState::Running => {
                        let d = describe_obs(t.pid, o, now, host);
                        let blocked = o.since.map(|s| now.saturating_sub(s.start_ns) / 1_000_000);
                        (d.syscall, blocked, o.since.map(|s| s.how), d.wait)
                    }
                    _ => (None, None, None, None),
                };
                let (stack, kernel_stack) = match &t.stacks {
                    Some(s) if alive => (s.stacks.user.clone(), s.stacks.kernel.clone()),
                    _ => (Vec::new(), Vec::new()),
                };
                let blocks = t
                    .stats
                    .as_ref()
                    .map(|st| {
                        Call::ALL
                            .iter()
                            .zip(st.stats.iter())
                            .filter(|(_, s)| s.count > 0)
                            .map(|(c, s)| (c.name().to_string(), hist::summarize(s)))
                            .collect()
                    })
                    .unwrap_or_default();
                let cpu_ms = t
                    .cpu_ticks
                    .saturating_sub(t.first_cpu_ticks.unwrap_or(t.cpu_ticks))
                    * 1000
                    / clk;
                ThreadFacts {
                    tid: t.tid,
                    pid: t.pid,
                    name: t.name.clone(),
                    state,
                    syscall,
                    blocked_ms,
                    blocked_since,
                    wait,
                    stack,
                    kernel_stack,
                    blocks,
                    woke_after_signal: t.stats.as_ref().map(|s| s.wakes_after_signal).unwrap_or(0),
                    at_signal: t.at_signal.clone(),
                    exited_after_ms: t.exited_ns.map(rel),
                    ns_tid: t.ns_tid,
                    cpu_ms,
                    spin_samples: t.spin_samples.clone(),
                    runnable_share: if alive { t.runnable_share() } else { 0.0 },
                    last_wake: t
                        .stats
                        .as_ref()
                        .filter(|s| s.woke_addr != 0)
                        .map(|s| LastWake {
                            addr: s.woke_addr,
                            at_ns: t.wakes.changed_ns,
                        }),
                    lang_note: None,
                    holds: Vec::new(),
                }
            })
            .collect();
        out.sort_by_key(|t| (t.pid, t.tid));
        out
    }
}

/// A thread's observation as the report describes it (state, syscall, wait).
pub(super) fn describe_obs(pid: u32, o: &Observation, now: u64, host: &dyn Host) -> AtSignal {
    let syscall = o.nr.map(|nr| match Call::from_nr(nr) {
        Some(c) => c.name().to_string(),
        None => syscalls::name(nr),
    });
    let wait = match &o.call {
        Some(c) => wait_of_call(pid, c, now, host),
        None => o.nr.and_then(|nr| {
            syscalls::first_arg_is_fd(nr).then(|| Wait::Fd {
                fd: o.args[0],
                target: host.fd_target(pid, o.args[0]),
                timeout_ms: None,
                object: None,
            })
        }),
    };
    AtSignal {
        state: o.state,
        syscall,
        wait,
    }
}

/// Reconstruct a probed call from /proc's syscall arguments (calls that began before attach).
pub(super) fn call_from_args(call: Call, args: &[u64; 6], start_ns: u64) -> Option<CallRecord> {
    let (obj, arg) = match call {
        Call::Futex => {
            if !futex_op::is_wait(args[1] as u32) {
                return None;
            }
            (args[0], args[1])
        }
        Call::FutexWaitv => (0, args[1]),
        Call::EpollWait | Call::EpollPwait | Call::EpollPwait2 => (args[0], args[2]),
        _ => (args[0], 0),
    };
    let timeout = match call {
        Call::Futex if args[3] != 0 => Timeout::Unknown,
        Call::EpollWait | Call::EpollPwait if (args[3] as i32) >= 0 => Timeout::Relative {
            ns: (args[3] as i32) as u64 * 1_000_000,
        },
        _ => Timeout::None,
    };
    Some(CallRecord {
        call,
        start_ns,
        obj,
        arg,
        timeout,
        interrupted_ns: 0,
        sched: false,
    })
}

fn timeout_ms(t: &Timeout, now: u64) -> Option<f64> {
    match *t {
        Timeout::None | Timeout::Unknown => None,
        Timeout::Relative { ns } => Some(ns as f64 / 1e6),
        Timeout::Absolute { ns, realtime } => {
            let base = if realtime { realtime_ns() } else { now };
            Some(ns.saturating_sub(base) as f64 / 1e6)
        }
    }
}

/// What a probed call waits on.
pub(super) fn wait_of_call(pid: u32, c: &CallRecord, now: u64, host: &dyn Host) -> Option<Wait> {
    let timeout_ms = timeout_ms(&c.timeout, now);
    Some(match c.call {
        Call::Futex => Wait::futex(
            c.obj,
            c.futex_op_name().unwrap_or("FUTEX_WAIT").to_string(),
            timeout_ms,
            host.read_u32(pid, c.obj),
        ),
        Call::FutexWaitv => Wait::futex(
            c.obj,
            format!("futex_waitv({})", c.arg),
            timeout_ms,
            host.read_u32(pid, c.obj),
        ),
        _ => Wait::Fd {
            fd: c.obj,
            target: host.fd_target(pid, c.obj),
            timeout_ms,
            object: None,
        },
    })
}
