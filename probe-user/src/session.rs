//! A watching session: the aggregation library that the one-shot CLI (`--pid`), `stallprobe run`
//! and a long-running sidecar all sit on.
//!
//! A [`Session`] owns the loaded probes and turns what they report into two things:
//! - a stream of [`LiveEvent`]s (a thread crossed the threshold, a slow call returned, a shutdown
//!   signal arrived, a thread or process exited), returned by [`Session::poll`];
//! - a [`Report`] at the end ([`Session::finish`]), with the shutdown verdict.
//!
//! It combines three sources: ring-buffer events (slow calls, signals, exits), the task iterator
//! (every target thread's call in flight, registers and histograms, every `interval`), and /proc
//! (syscall of threads asleep outside the probed calls, CPU time, kernel stacks, fd targets).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use probe_ebpf::{Call, TaskState, UserRegs};
use tokio::io::unix::AsyncFd;

use crate::{
    bpf::{HookChoice, ProbeOptions, Probes},
    clock::{diff_ms, mono_ns, realtime_ns},
    error::StallError,
    events::{CallRecord, Event, SignalInfo, SlowCall, TaskSnapshot, Timeout, decode_event},
    hist,
    procfs::{self, SyscallState},
    report::{
        AtSignal, BlockedSince, Frame, Report, Role, Runtime, SCHEMA, SessionInfo, SlowCallReport,
        TargetInfo, ThreadReport, ThreadState, TimelineEntry, Wait,
    },
    runtime, signals,
    stack::{StackCollector, Stacks, top_app_frame},
    syscalls, verdict,
};

#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// A thread blocked this long is listed; a call this slow is reported.
    pub threshold: Duration,
    /// How often blocked threads are re-checked.
    pub interval: Duration,
    /// Time allowed after the first shutdown signal before the verdict.
    pub grace: Duration,
    /// Bit n: signal n is a shutdown signal.
    pub shutdown_sigmask: u64,
    pub hook: HookChoice,
    pub follow_children: bool,
    pub bpf_log: bool,
    /// Above this many live threads, only threads blocked past the threshold (and flagged ones)
    /// get stacks in the final report.
    pub max_stacks: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threshold: Duration::from_millis(500),
            interval: Duration::from_millis(250),
            grace: Duration::from_secs(5),
            shutdown_sigmask: signals::parse_mask(signals::DEFAULT_SHUTDOWN).unwrap_or(1 << 15),
            hook: HookChoice::Auto,
            follow_children: false,
            bpf_log: false,
            max_stacks: 512,
        }
    }
}

/// Something worth a line while the session runs.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// A thread has been blocked in a probed call for at least the threshold.
    Blocked {
        pid: u32,
        tid: u32,
        name: String,
        syscall: String,
        wait: Option<Wait>,
        blocked_ms: u64,
        at: Option<String>,
    },
    /// A probed call returned after at least the threshold.
    SlowCall {
        pid: u32,
        tid: u32,
        name: String,
        syscall: String,
        wait: Option<Wait>,
        duration_ms: f64,
        at: Option<String>,
    },
    Signal {
        pid: u32,
        signal: String,
        sender_pid: u32,
        sender_comm: String,
        first: bool,
    },
    ThreadExited {
        pid: u32,
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

/// How the session ended (decides what the report says about it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// `--duration` elapsed.
    Duration,
    /// Ctrl-C or SIGTERM to stallprobe.
    Interrupted,
    /// Every target process exited.
    TargetExited,
    /// The grace period after a shutdown signal expired.
    GraceExpired,
}

/// Identity of one block: the same call, object and start means the same block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockKey {
    nr: u32,
    obj: u64,
    start_ns: u64,
}

/// What a thread was doing at the last look.
#[derive(Clone, Debug)]
struct Observation {
    state: ThreadState,
    /// Syscall number it is in (probed or not).
    nr: Option<u32>,
    args: [u64; 6],
    /// The probed call it is blocked in.
    call: Option<CallRecord>,
    /// Start of the current block/sleep and how we know it.
    since: Option<(u64, BlockedSince)>,
    regs: UserRegs,
    /// Kernel stack addresses from the snapshot (sleeping threads).
    kstack: Vec<u64>,
}

impl Observation {
    fn block_key(&self) -> Option<BlockKey> {
        let (start_ns, _) = self.since?;
        Some(BlockKey {
            nr: self.nr?,
            obj: self.call.map(|c| c.obj).unwrap_or(self.args[0]),
            start_ns,
        })
    }
}

struct ThreadTrack {
    tid: u32,
    pid: u32,
    name: String,
    ns_tid: Option<u32>,
    stats: Option<Box<TaskState>>,
    obs: Option<Observation>,
    exited_ns: Option<u64>,
    /// The kernel's exit event for this thread was processed.
    exit_event_seen: bool,
    announced: Option<BlockKey>,
    stacks: Option<(Option<BlockKey>, Stacks)>,
    /// Its state at the last look before the first shutdown signal.
    at_signal: Option<AtSignal>,
    /// (wake calls seen, when that count last changed): when it last woke futex waiters,
    /// to the precision of the snapshot interval.
    wakes: (u64, u64),
    /// `sched_info.last_arrival` and the call in flight at the last look.
    last_arrival: u64,
    last_in_flight: Option<CallRecord>,
    first_cpu_ticks: Option<u64>,
    cpu_ticks: u64,
    /// (time, ns on a CPU, ns waiting for a CPU) at each look after the shutdown signal, for
    /// spin detection (from /proc/PID/task/TID/schedstat).
    cpu_after_signal: Vec<(u64, u64, u64)>,
    spin_samples: Vec<Vec<Frame>>,
}

impl ThreadTrack {
    fn new(tid: u32, pid: u32, name: &str) -> ThreadTrack {
        let ns_tid = procfs::read_status(pid, tid)
            .map(|s| procfs::parse_nspid(&s))
            .and_then(|v| v.last().copied())
            .filter(|&inner| inner != tid);
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
            at_signal: None,
            wakes: (0, 0),
            last_arrival: 0,
            last_in_flight: None,
            first_cpu_ticks: None,
            cpu_ticks: 0,
            cpu_after_signal: Vec::new(),
            spin_samples: Vec::new(),
        }
    }
}

struct ProcTrack {
    pid: u32,
    comm: String,
    exe: String,
    cmdline: Vec<String>,
    ns_pid: Option<u32>,
    parent: Option<u32>,
    runtime: Runtime,
    exited_ns: Option<u64>,
    exit_code: Option<i32>,
    killed_by: Option<String>,
}

impl ProcTrack {
    fn read(pid: u32, parent: Option<u32>) -> ProcTrack {
        let stat = procfs::read_process_stat(pid);
        ProcTrack {
            pid,
            comm: stat.map(|s| s.comm).unwrap_or_default(),
            exe: procfs::read_exe(pid).unwrap_or_default(),
            cmdline: procfs::read_cmdline(pid).unwrap_or_default(),
            ns_pid: procfs::read_status(pid, pid)
                .map(|s| procfs::parse_nspid(&s))
                .and_then(|v| v.last().copied())
                .filter(|&inner| inner != pid),
            parent,
            runtime: runtime::detect(pid),
            exited_ns: None,
            exit_code: None,
            killed_by: None,
        }
    }

    fn info(&self) -> TargetInfo {
        TargetInfo {
            pid: self.pid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            runtime: self.runtime,
            cmdline: self.cmdline.clone(),
            exited: self.exited_ns.is_some(),
            exit_code: self.exit_code,
            killed_by: self.killed_by.clone(),
            ns_pid: self.ns_pid,
        }
    }
}

/// Exited threads kept for the report; more are counted, not listed.
const MAX_EXITED: usize = 2000;
/// Timeline entries kept.
const MAX_TIMELINE: usize = 2000;
/// Shutdown signals kept (a flood of SIGHUPs must not grow memory).
const MAX_SIGNALS: usize = 100;
/// Every this many looks, the task iterator also dumps the histograms.
const STATS_EVERY: u64 = 8;
/// How far two estimates of when a thread last ran may differ and still be the same block.
const SCHED_JITTER_NS: u64 = 20_000_000;
/// Keep at most this many slow calls with stacks in the report (all are counted).
const MAX_SLOW_CALLS: usize = 200;
/// Stack samples kept per running thread after the shutdown signal.
const MAX_SPIN_SAMPLES: usize = 5;

pub struct Session {
    opts: SessionOptions,
    probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    attach_ns: u64,
    main_pid: Option<u32>,
    procs: BTreeMap<u32, ProcTrack>,
    threads: BTreeMap<u32, ThreadTrack>,
    /// Threads that exited (kept apart: their tid may be reused). Bounded: see `retire`.
    exited: std::collections::VecDeque<ThreadTrack>,
    /// Exited threads dropped from `exited` to bound memory (thread churn).
    exited_not_listed: u64,
    /// Block-time statistics of every thread that exited, summed per call (for metrics that
    /// only go up).
    retired_stats: [probe_ebpf::CallStats; probe_ebpf::NUM_CALLS],
    stacks: StackCollector,
    signals: Vec<SignalInfo>,
    /// The processes a shutdown signal reached in this episode: they are the ones judged.
    episode_pids: Option<Vec<u32>>,
    slow_calls: Vec<SlowCallReport>,
    slow_calls_total: u64,
    timeline: Vec<(u64, String, Option<u32>)>,
    notes: Vec<String>,
    last_snapshot_ns: u64,
    snapshots_taken: u64,
    last_dropped: u64,
    clk_tck: u64,
}

impl Session {
    /// Load and attach the probes. No process is watched until [`Session::add_process`].
    pub fn attach(opts: SessionOptions) -> Result<Session, StallError> {
        let mut probes = Probes::load(&ProbeOptions {
            threshold_ns: opts.threshold.as_nanos() as u64,
            shutdown_sigmask: opts.shutdown_sigmask,
            hook: opts.hook,
            follow_children: opts.follow_children,
            bpf_log: opts.bpf_log,
        })?;
        let ring = probes.take_events().ok_or_else(|| StallError::Load {
            action: "open the event ring buffer".into(),
            detail: "already taken".into(),
            hint: None,
        })?;
        // SAFETY: the ring buffer's fd is owned by the AsyncFd and lives as long as it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| StallError::Load {
            action: "poll the event ring buffer".into(),
            detail: e.to_string(),
            hint: None,
        })?;
        let mut notes = Vec::new();
        if let Some(why) = &probes.fallback_reason {
            notes.push(format!(
                "fentry is not available here ({why}); using raw tracepoints"
            ));
        }
        if !probes.skipped_calls.is_empty() {
            let names: Vec<&str> = probes.skipped_calls.iter().map(|c| c.name()).collect();
            notes.push(format!(
                "not probed on this kernel (it lacks them): {}",
                names.join(", ")
            ));
        }
        Ok(Session {
            opts,
            probes,
            ring,
            attach_ns: mono_ns(),
            main_pid: None,
            procs: BTreeMap::new(),
            threads: BTreeMap::new(),
            exited: std::collections::VecDeque::new(),
            exited_not_listed: 0,
            retired_stats: [probe_ebpf::CallStats {
                count: 0,
                total_ns: 0,
                max_ns: 0,
                buckets: [0; probe_ebpf::HIST_BUCKETS],
            }; probe_ebpf::NUM_CALLS],
            stacks: StackCollector::new(),
            signals: Vec::new(),
            episode_pids: None,
            slow_calls: Vec::new(),
            slow_calls_total: 0,
            timeline: Vec::new(),
            notes,
            last_snapshot_ns: 0,
            snapshots_taken: 0,
            last_dropped: 0,
            clk_tck: procfs::clock_ticks(),
        })
    }

    /// Watch process `pid` (the first one added is the report's `target`).
    pub fn add_process(&mut self, pid: u32) -> Result<(), StallError> {
        if !procfs::process_exists(pid) {
            return Err(StallError::NoSuchProcess { pid, exited: false });
        }
        self.probes.add_target(pid)?;
        self.procs
            .entry(pid)
            .or_insert_with(|| ProcTrack::read(pid, None));
        self.stacks.prepare(pid);
        if self.main_pid.is_none() {
            self.main_pid = Some(pid);
            self.attach_ns = mono_ns();
        }
        Ok(())
    }

    /// Refresh what is known about a process after it exec'd (run mode calls this once the
    /// child has started the real command).
    pub fn refresh_process(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            let fresh = ProcTrack::read(pid, p.parent);
            p.comm = fresh.comm;
            p.exe = fresh.exe;
            p.cmdline = fresh.cmdline;
            p.runtime = fresh.runtime;
        }
        self.stacks.forget(pid);
        self.stacks.prepare(pid);
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    pub fn main_pid(&self) -> Option<u32> {
        self.main_pid
    }

    /// The first shutdown signal to a target, if one came.
    pub fn shutdown_signal(&self) -> Option<&SignalInfo> {
        self.signals.first()
    }

    /// When the verdict is due: the first shutdown signal plus the grace period.
    pub fn grace_deadline_ns(&self) -> Option<u64> {
        self.shutdown_signal()
            .map(|s| s.ts_ns + self.opts.grace.as_nanos() as u64)
    }

    /// Every watched process has exited.
    pub fn all_exited(&self) -> bool {
        !self.procs.is_empty() && self.procs.values().all(|p| p.exited_ns.is_some())
    }

    /// Every process a shutdown signal reached has exited (others, e.g. a restarted unit's new
    /// process or a bystander in the same cgroup, do not count).
    pub fn episode_exited(&self) -> bool {
        match &self.episode_pids {
            Some(pids) => pids
                .iter()
                .all(|p| self.procs.get(p).is_none_or(|t| t.exited_ns.is_some())),
            None => self.all_exited(),
        }
    }

    /// Forget the shutdown episode just reported: signals, exited processes and threads,
    /// timeline, slow calls; clear the kernel side's shutdown time. The session goes on.
    pub fn reset_episode(&mut self) {
        self.signals.clear();
        self.episode_pids = None;
        self.timeline.clear();
        self.slow_calls.clear();
        self.slow_calls_total = 0;
        self.exited.clear();
        self.exited_not_listed = 0;
        let gone: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.exited_ns.is_some())
            .map(|p| p.pid)
            .collect();
        for pid in gone {
            self.procs.remove(&pid);
            self.stacks.forget(pid);
            if self.main_pid == Some(pid) {
                self.main_pid = self.procs.keys().next().copied();
            }
        }
        for t in self.threads.values_mut() {
            t.at_signal = None;
            t.cpu_after_signal.clear();
            t.spin_samples.clear();
        }
        self.probes.reset_shutdown();
    }

    /// Current numbers for the metrics endpoint.
    pub fn metrics(&self) -> crate::sidecar::metrics::Snapshot {
        use crate::sidecar::metrics::Snapshot;
        let threshold = self.opts.threshold.as_nanos() as u64;
        let now = mono_ns();
        let mut snap = Snapshot {
            processes: self.live_pids().len() as u64,
            dropped: self.probes.counters(),
            calls: self.retired_stats,
            ..Snapshot::default()
        };
        for t in self.threads.values() {
            if let Some(st) = &t.stats {
                for (acc, s) in snap.calls.iter_mut().zip(st.stats.iter()) {
                    acc.count += s.count;
                    acc.total_ns += s.total_ns;
                    acc.max_ns = acc.max_ns.max(s.max_ns);
                    for (a, b) in acc.buckets.iter_mut().zip(s.buckets.iter()) {
                        *a += *b;
                    }
                }
            }
            let Some(o) = &t.obs else { continue };
            *snap.threads.entry(o.state.as_str()).or_default() += 1;
            let long = o
                .since
                .is_some_and(|(s, _)| now.saturating_sub(s) >= threshold);
            if o.state == ThreadState::Blocked && long {
                let call =
                    o.nr.and_then(Call::from_nr)
                        .map(|c| c.name())
                        .unwrap_or("other");
                let rt = self
                    .procs
                    .get(&t.pid)
                    .map(|p| p.runtime)
                    .unwrap_or_default();
                let stack = t
                    .stacks
                    .as_ref()
                    .map(|(_, s)| s.user.as_slice())
                    .unwrap_or(&[]);
                let role = if runtime::classify(rt, &t.name, Some(call), stack).is_some() {
                    "runtime"
                } else {
                    "app"
                };
                *snap.blocked.entry((call, role)).or_default() += 1;
            }
        }
        snap
    }

    /// Pids of the live watched processes.
    pub fn live_pids(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.exited_ns.is_none())
            .map(|p| p.pid)
            .collect()
    }

    /// Whether `pid` is watched (alive or not).
    pub fn watches(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Record how a process exited, as its parent saw it (run mode reaps its child).
    pub fn note_exit_status(&mut self, pid: u32, exit_code: Option<i32>, killed_by: Option<i32>) {
        let now = mono_ns();
        let last_thread_exit = self.last_thread_exit(pid);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exit_code = exit_code;
            p.killed_by = killed_by.map(|s| signals::name(s as u32));
            if p.exited_ns.is_none() {
                p.exited_ns = Some(last_thread_exit.unwrap_or(now));
            }
        }
        let _ = self.probes.remove_target(pid);
    }

    /// Move an exited thread to the `exited` list, keeping it bounded: under thread churn the
    /// oldest short-lived threads are dropped (and counted), so memory stays flat.
    fn retire(&mut self, t: ThreadTrack) {
        if let Some(st) = &t.stats {
            for (acc, s) in self.retired_stats.iter_mut().zip(st.stats.iter()) {
                acc.count += s.count;
                acc.total_ns += s.total_ns;
                acc.max_ns = acc.max_ns.max(s.max_ns);
                for (a, b) in acc.buckets.iter_mut().zip(s.buckets.iter()) {
                    *a += *b;
                }
            }
        }
        self.exited.push_back(t);
        if self.exited.len() > MAX_EXITED {
            let threshold = self.opts.threshold.as_nanos() as u64;
            let shutdown = self.shutdown_signal().map(|s| s.ts_ns);
            // Prefer dropping threads that never blocked long and exited before any signal.
            let boring = |t: &ThreadTrack| {
                let long = t
                    .stats
                    .as_ref()
                    .is_some_and(|s| s.stats.iter().any(|c| c.max_ns >= threshold));
                let after_signal = matches!((t.exited_ns, shutdown), (Some(e), Some(s)) if e >= s);
                !long && !after_signal && t.exit_event_seen
            };
            let idx = self.exited.iter().position(boring).unwrap_or(0);
            self.exited.remove(idx);
            self.exited_not_listed += 1;
        }
    }

    /// A live thread is gone (seen missing, or its process exited) without its exit event.
    fn mark_exited(&mut self, tid: u32, at: u64) {
        if let Some(mut t) = self.threads.remove(&tid) {
            t.exited_ns = Some(at);
            if let Some(o) = t.obs.as_mut() {
                o.state = ThreadState::Exited;
            }
            self.retire(t);
        }
    }

    fn add_timeline(&mut self, entry: (u64, String, Option<u32>)) {
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(entry);
        }
    }

    fn last_thread_exit(&self, pid: u32) -> Option<u64> {
        self.exited
            .iter()
            .filter(|t| t.pid == pid)
            .filter_map(|t| t.exited_ns)
            .max()
    }

    /// Wait until the ring buffer has data or `timeout` passes.
    pub async fn wait(&self, timeout: Duration) {
        if let Ok(Ok(mut guard)) = tokio::time::timeout(timeout, self.ring.readable()).await {
            // Clear the readiness now: the drain in `poll` empties the ring, and the next event
            // is a new edge. Keeping it set would make every later wait return at once (a busy
            // loop).
            guard.clear_ready();
        }
    }

    /// Drain the ring buffer, and look at every thread if `interval` has passed (or `force`).
    pub fn poll(&mut self, force_snapshot: bool) -> Vec<LiveEvent> {
        let mut live = Vec::new();
        self.probes.flush_log();
        self.drain_ring(&mut live);
        let now = mono_ns();
        let interval = if self.shutdown_signal().is_some() {
            // Look more often during the grace period: exits and spin samples.
            self.opts.interval.min(Duration::from_millis(100))
        } else {
            self.opts.interval
        };
        if force_snapshot || now.saturating_sub(self.last_snapshot_ns) >= interval.as_nanos() as u64
        {
            self.snapshot(&mut live);
            self.last_snapshot_ns = mono_ns();
        }
        let dropped = self.probes.counters().dropped();
        if dropped > self.last_dropped {
            self.last_dropped = dropped;
            live.push(LiveEvent::Dropped { total: dropped });
        }
        live
    }

    fn drain_ring(&mut self, live: &mut Vec<LiveEvent>) {
        let mut events = Vec::new();
        {
            let ring = self.ring.get_mut();
            while let Some(item) = ring.next() {
                if let Some(e) = decode_event(&item) {
                    events.push(e);
                }
            }
        }
        for e in events {
            self.handle_event(e, live);
        }
    }

    fn rel_signal_ms(&self, ts: u64) -> Option<i64> {
        self.shutdown_signal().map(|s| diff_ms(ts, s.ts_ns))
    }

    fn handle_event(&mut self, e: Event, live: &mut Vec<LiveEvent>) {
        match e {
            Event::SlowCall(sc) => self.handle_slow_call(*sc, live),
            Event::Signal(s) => {
                let first = self.signals.is_empty();
                let pids = self.episode_pids.get_or_insert_with(Vec::new);
                if !pids.contains(&s.tgid) {
                    pids.push(s.tgid);
                }
                if first {
                    let now = mono_ns();
                    for t in self.threads.values_mut() {
                        t.at_signal = t.obs.as_ref().map(|o| describe_obs(t.pid, o, now));
                    }
                }
                let name = signals::name(s.sig);
                self.add_timeline((
                    s.ts_ns,
                    format!(
                        "{name} to pid {} from pid {} ({})",
                        s.tgid, s.sender_tgid, s.sender_comm
                    ),
                    None,
                ));
                live.push(LiveEvent::Signal {
                    pid: s.tgid,
                    signal: name,
                    sender_pid: s.sender_tgid,
                    sender_comm: s.sender_comm.clone(),
                    first,
                });
                if self.signals.len() < MAX_SIGNALS {
                    self.signals.push(s);
                }
            }
            Event::ThreadExit(x) => {
                let after = self.rel_signal_ms(x.ts_ns);
                // The thread may already have been moved to `exited` by a snapshot that no
                // longer saw it: complete that entry rather than adding a second one.
                if let Some(t) = self
                    .exited
                    .iter_mut()
                    .rev()
                    .find(|t| t.tid == x.tid && !t.exit_event_seen)
                    && !self.threads.contains_key(&x.tid)
                {
                    t.exit_event_seen = true;
                    t.exited_ns = Some(x.ts_ns);
                    if x.state.is_some() {
                        t.stats = x.state;
                    }
                    return;
                }
                let mut t = self
                    .threads
                    .remove(&x.tid)
                    .unwrap_or_else(|| ThreadTrack::new(x.tid, x.tgid, &x.comm));
                t.exit_event_seen = true;
                t.exited_ns = Some(x.ts_ns);
                if !x.comm.is_empty() {
                    t.name = x.comm.clone(); // the name at exit is the latest one
                }
                if x.state.is_some() {
                    t.stats = x.state;
                }
                if let Some(o) = t.obs.as_mut() {
                    o.state = ThreadState::Exited;
                }
                if self.shutdown_signal().is_some() {
                    self.add_timeline((
                        x.ts_ns,
                        format!("thread {} ({}) exited", x.tid, t.name),
                        Some(x.tid),
                    ));
                    live.push(LiveEvent::ThreadExited {
                        pid: x.tgid,
                        tid: x.tid,
                        name: t.name.clone(),
                        after_signal_ms: after,
                    });
                }
                self.retire(t);
            }
            Event::Fork {
                parent_tgid,
                child_pid,
                followed,
                ts_ns,
                ..
            } => {
                if followed {
                    self.probes.note_kernel_added_target(child_pid);
                    self.procs
                        .entry(child_pid)
                        .or_insert_with(|| ProcTrack::read(child_pid, Some(parent_tgid)));
                    self.stacks.prepare(child_pid);
                }
                self.add_timeline((
                    ts_ns,
                    format!(
                        "pid {parent_tgid} started child process {child_pid}{}",
                        if followed { " (followed)" } else { "" }
                    ),
                    None,
                ));
                live.push(LiveEvent::ChildStarted {
                    parent: parent_tgid,
                    pid: child_pid,
                    followed,
                });
            }
            Event::Exec { tgid, ts_ns, .. } => {
                self.refresh_process(tgid);
                let exe = self
                    .procs
                    .get(&tgid)
                    .map(|p| p.exe.clone())
                    .unwrap_or_default();
                self.add_timeline((ts_ns, format!("pid {tgid} exec'd {exe}"), None));
                live.push(LiveEvent::Exec { pid: tgid, exe });
            }
        }
    }

    fn handle_slow_call(&mut self, sc: SlowCall, live: &mut Vec<LiveEvent>) {
        self.slow_calls_total += 1;
        let name = self
            .threads
            .get(&sc.tid)
            .or_else(|| self.exited.iter().rev().find(|t| t.tid == sc.tid))
            .map(|t| t.name.clone())
            .or_else(|| procfs::read_comm(sc.tgid, sc.tid))
            .unwrap_or_default();
        let wait = wait_of_call(sc.tgid, &sc.call, sc.end_ns);
        let stack = if self.slow_calls.len() < MAX_SLOW_CALLS {
            self.stacks.from_copy(sc.tgid, sc.regs, &sc.stack)
        } else {
            Vec::new()
        };
        let at = top_app_frame(&stack);
        let rep = SlowCallReport {
            tid: sc.tid,
            pid: sc.tgid,
            name: name.clone(),
            syscall: sc.call.call.name().to_string(),
            wait: wait.clone(),
            duration_ms: sc.dur_ns as f64 / 1e6,
            ended_at_ms: diff_ms(sc.end_ns, self.attach_ns),
            ret: sc.ret,
            stack,
        };
        live.push(LiveEvent::SlowCall {
            pid: sc.tgid,
            tid: sc.tid,
            name,
            syscall: rep.syscall.clone(),
            wait,
            duration_ms: rep.duration_ms,
            at,
        });
        if self.slow_calls.len() < MAX_SLOW_CALLS {
            self.slow_calls.push(rep);
        }
    }

    /// Look at every target thread now. Histograms come along every few looks (and always
    /// with `with_stats`): they are most of the dump and change slowly.
    fn snapshot_with(&mut self, live: &mut Vec<LiveEvent>, with_stats: bool) {
        self.snapshots_taken += 1;
        let with_stats = with_stats || self.snapshots_taken % STATS_EVERY == 1;
        let snaps = match self.probes.snapshot(with_stats) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("task snapshot failed: {e}");
                if !self.notes.contains(&msg) {
                    self.notes.push(msg);
                }
                return;
            }
        };
        let now = mono_ns();
        let mut seen = HashSet::new();
        for s in snaps {
            if let std::collections::btree_map::Entry::Vacant(e) = self.procs.entry(s.tgid) {
                // A child the kernel side followed before we saw its fork event.
                e.insert(ProcTrack::read(s.tgid, None));
                self.stacks.prepare(s.tgid);
            }
            seen.insert(s.tid);
            self.observe(&s, now, live);
        }
        // Threads that vanished without an exit event (event dropped, or exited between looks).
        let gone: Vec<u32> = self
            .threads
            .iter()
            .filter(|(tid, t)| !seen.contains(*tid) && !procfs::task_path(t.pid, **tid).exists())
            .map(|(tid, _)| *tid)
            .collect();
        for tid in gone {
            self.mark_exited(tid, now);
        }
        // Runtimes load late (a JVM's libjvm, a Python's libpython): ask again while unknown.
        for p in self.procs.values_mut().filter(|p| p.exited_ns.is_none()) {
            if matches!(p.runtime, Runtime::Native | Runtime::Tokio)
                && let Some(rt) = runtime::detect_from_maps(p.pid)
            {
                p.runtime = rt;
            }
        }
        // Process exits.
        let pids: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.exited_ns.is_none())
            .map(|p| p.pid)
            .collect();
        for pid in pids {
            if procfs::process_alive(pid) {
                continue;
            }
            let stat = procfs::read_process_stat(pid);
            let at = self.last_thread_exit(pid).unwrap_or(now);
            let after = self.rel_signal_ms(at);
            if let Some(p) = self.procs.get_mut(&pid) {
                p.exited_ns = Some(at);
                if p.exit_code.is_none() && p.killed_by.is_none() {
                    // A zombie's stat still holds its exit status (until the parent reaps it).
                    if let Some(code) = stat.and_then(|s| s.exit_code) {
                        if code & 0x7f == 0 {
                            p.exit_code = Some((code >> 8) & 0xff);
                        } else {
                            p.killed_by = Some(signals::name((code & 0x7f) as u32));
                        }
                    }
                }
                live.push(LiveEvent::ProcessExited {
                    pid,
                    exit_code: p.exit_code,
                    killed_by: p.killed_by.clone(),
                    after_signal_ms: after,
                });
                self.add_timeline((at, format!("process {pid} exited"), None));
            }
            // Its pid may be reused by an unrelated process: stop probing it.
            let _ = self.probes.remove_target(pid);
            // Threads of an exited process are exited, even if we missed their events.
            let tids: Vec<u32> = self
                .threads
                .values()
                .filter(|t| t.pid == pid)
                .map(|t| t.tid)
                .collect();
            for tid in tids {
                self.mark_exited(tid, at);
            }
        }
    }

    fn snapshot(&mut self, live: &mut Vec<LiveEvent>) {
        self.snapshot_with(live, false);
    }

    fn observe(&mut self, s: &TaskSnapshot, now: u64, live: &mut Vec<LiveEvent>) {
        let after_signal = self.shutdown_signal().map(|sig| sig.ts_ns);
        let threshold = self.opts.threshold.as_nanos() as u64;
        let attach_ns = self.attach_ns;
        let t = self
            .threads
            .entry(s.tid)
            .or_insert_with(|| ThreadTrack::new(s.tid, s.tgid, &s.comm));
        t.name = s.comm.clone();
        match (&s.state, s.brief, t.stats.as_mut()) {
            // A brief dump: the counters before the histograms are fresh, the histograms not.
            (Some(st), true, Some(old)) => {
                let stats = old.stats;
                **old = **st;
                old.stats = stats;
            }
            (Some(st), _, _) => t.stats = Some(st.clone()),
            (None, _, _) => {}
        }
        if let Some(st) = &s.state
            && st.woke_count != t.wakes.0
        {
            t.wakes = (st.woke_count, now);
        }
        if t.first_cpu_ticks.is_none() {
            let ticks = procfs::read_stat(s.tgid, s.tid).map(|st| st.utime + st.stime);
            t.first_cpu_ticks = Some(ticks.unwrap_or(0));
            t.cpu_ticks = ticks.unwrap_or(0);
        }
        if after_signal.is_some()
            && let Some((run, wait)) = procfs::read_schedstat(s.tgid, s.tid)
        {
            t.cpu_after_signal.push((now, run, wait));
        }
        let running = s.kstate == 0;
        // A thread asleep since the last look (it has not run: same last arrival on a CPU) in
        // the same call is where it was: keep that observation, and spare the /proc reads that
        // a thousand idle threads would cost at every look.
        let in_flight_now = s.in_flight();
        let unchanged = !running
            && s.last_arrival != 0
            && s.last_arrival == t.last_arrival
            && in_flight_now == t.last_in_flight
            && t.obs
                .as_ref()
                .is_some_and(|o| o.state != ThreadState::Running);
        t.last_arrival = s.last_arrival;
        t.last_in_flight = in_flight_now;
        // A call interrupted by a signal is still the thread's wait if the kernel restarted it
        // (same syscall, or restart_syscall); otherwise the record is stale.
        let in_flight = s.in_flight().filter(|c| {
            c.interrupted_ns == 0
                || matches!(procfs::read_syscall(s.tgid, s.tid),
                    Some(SyscallState::InSyscall { nr, .. }) if nr == c.call.nr() || nr == syscalls::RESTART_SYSCALL)
        });
        let previous = t.obs.clone().filter(|_| unchanged);
        let obs = if let Some(prev) = previous {
            prev
        } else if running {
            Observation {
                state: ThreadState::Running,
                nr: None,
                args: [0; 6],
                call: None,
                since: None,
                regs: s.regs,
                kstack: s.kstack.clone(),
            }
        } else if let Some(c) = in_flight {
            Observation {
                state: ThreadState::Blocked,
                nr: Some(c.call.nr()),
                args: [c.obj, c.arg, 0, 0, 0, 0],
                call: Some(c),
                since: Some((c.start_ns, BlockedSince::Probe)),
                regs: s.regs,
                kstack: s.kstack.clone(),
            }
        } else {
            // Asleep, but not in a call the probes saw start: since before attach, or a call
            // outside the probed set. /proc says which.
            let fresh = match s.last_ran_mono_ns() {
                Some(t) if t <= now => (t, BlockedSince::Sched),
                _ => (attach_ns, BlockedSince::Attach),
            };
            match procfs::read_syscall(s.tgid, s.tid) {
                Some(SyscallState::InSyscall { nr, args, .. }) => {
                    // The estimate jitters by the reader's own scheduling; keep the first one
                    // while the thread stays in the same call and has not run since.
                    let since_estimate = match &t.obs {
                        Some(prev)
                            if prev.nr == Some(nr)
                                && prev.args[0] == args[0]
                                && prev.state != ThreadState::Running
                                && matches!(prev.since, Some((p, how)) if how != BlockedSince::Probe
                                    && fresh.0 < p + SCHED_JITTER_NS) =>
                        {
                            prev.since.unwrap_or(fresh)
                        }
                        _ => fresh,
                    };
                    let call =
                        Call::from_nr(nr).and_then(|c| call_from_args(c, &args, since_estimate.0));
                    Observation {
                        state: if call.is_some() {
                            ThreadState::Blocked
                        } else {
                            ThreadState::Sleeping
                        },
                        nr: Some(nr),
                        args,
                        call,
                        since: Some(since_estimate),
                        regs: s.regs,
                        kstack: s.kstack.clone(),
                    }
                }
                Some(SyscallState::Running) => Observation {
                    state: ThreadState::Running,
                    nr: None,
                    args: [0; 6],
                    call: None,
                    since: None,
                    regs: s.regs,
                    kstack: s.kstack.clone(),
                },
                _ => Observation {
                    state: ThreadState::Sleeping,
                    nr: None,
                    args: [0; 6],
                    call: None,
                    since: Some(fresh),
                    regs: s.regs,
                    kstack: s.kstack.clone(),
                },
            }
        };

        let key = obs.block_key();
        let pid = t.pid;
        let tid = t.tid;
        // Announce a thread that newly crossed the threshold in a probed call, with its stack.
        if obs.state == ThreadState::Blocked
            && let Some((start, _)) = obs.since
            && now.saturating_sub(start) >= threshold
            && t.announced != key
        {
            t.announced = key;
            let stacks = self.stacks.live(pid, tid, obs.regs, &obs.kstack);
            let at = top_app_frame(&stacks.user);
            let wait = obs.call.as_ref().map(|c| wait_of_call(pid, c, now));
            live.push(LiveEvent::Blocked {
                pid,
                tid,
                name: t.name.clone(),
                syscall: Call::from_nr(obs.nr.unwrap_or(u32::MAX))
                    .map(|c| c.name().to_string())
                    .unwrap_or_default(),
                wait: wait.flatten(),
                blocked_ms: now.saturating_sub(start) / 1_000_000,
                at,
            });
            t.stacks = Some((key, stacks));
        }
        // After a shutdown signal, sample where running threads are.
        if obs.state == ThreadState::Running
            && after_signal.is_some()
            && t.spin_samples.len() < MAX_SPIN_SAMPLES
        {
            let user = self.stacks.live_user(pid, obs.regs);
            if !user.is_empty() {
                t.spin_samples.push(user);
            }
        }
        t.obs = Some(obs);
    }

    /// End the session: one last look, stacks for whoever still needs them, the verdict.
    pub fn finish(mut self, end: EndReason) -> Report {
        self.report(end)
    }

    /// The report as of now, without ending the session (the sidecar reports one shutdown
    /// episode, calls [`Session::reset_episode`] and goes on watching).
    pub fn report(&mut self, end: EndReason) -> Report {
        let mut sink = Vec::new();
        self.drain_ring(&mut sink);
        if self.procs.values().any(|p| p.exited_ns.is_none()) {
            self.snapshot_with(&mut sink, true);
        }
        let now = mono_ns();
        let counters = self.probes.counters();
        // CPU time used while watched (read once here, not at every look).
        for t in self.threads.values_mut() {
            if let Some(st) = procfs::read_stat(t.pid, t.tid) {
                t.cpu_ticks = st.utime + st.stime;
            }
        }

        // Stacks for live threads that do not have one for their current state.
        let live_count = self.threads.len();
        let threshold = self.opts.threshold.as_nanos() as u64;
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            let Some(t) = self.threads.get(&tid) else {
                continue;
            };
            let Some(obs) = t.obs.clone() else { continue };
            let key = obs.block_key();
            let have = matches!(&t.stacks, Some((k, _)) if *k == key);
            let long = obs
                .since
                .is_some_and(|(s, _)| now.saturating_sub(s) >= threshold);
            if have || (live_count > self.opts.max_stacks && !long) {
                continue;
            }
            let pid = t.pid;
            let st = self.stacks.live(pid, tid, obs.regs, &obs.kstack);
            if let Some(t) = self.threads.get_mut(&tid) {
                t.stacks = Some((key, st));
            }
        }
        if live_count > self.opts.max_stacks {
            self.notes.push(format!(
                "{live_count} live threads: stacks only for threads asleep for at least the threshold (raise with --max-stacks)"
            ));
        }

        let shutdown_ts = self.shutdown_signal().map(|s| s.ts_ns);
        let rel = |ts: u64| diff_ms(ts, shutdown_ts.unwrap_or(self.attach_ns));
        let clk = self.clk_tck.max(1);
        let mut threads: Vec<ThreadReport> = Vec::new();
        let all_tracks = self.threads.values().chain(self.exited.iter());
        for t in all_tracks {
            let obs = t.obs.as_ref();
            let state = if t.exited_ns.is_some() {
                ThreadState::Exited
            } else {
                obs.map(|o| o.state).unwrap_or(ThreadState::Sleeping)
            };
            let alive = state != ThreadState::Exited;
            let (syscall, blocked_ms, since, wait) = match obs {
                Some(o) if alive && o.state != ThreadState::Running => {
                    let d = describe_obs(t.pid, o, now);
                    let blocked = o.since.map(|(s, _)| now.saturating_sub(s) / 1_000_000);
                    (d.syscall, blocked, o.since.map(|(_, how)| how), d.wait)
                }
                _ => (None, None, None, None),
            };
            let (stack, kernel_stack) = match &t.stacks {
                Some((_, s)) if alive => (s.user.clone(), s.kernel.clone()),
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
            threads.push(ThreadReport {
                tid: t.tid,
                pid: t.pid,
                name: t.name.clone(),
                state,
                syscall,
                blocked_ms,
                blocked_since: since,
                wait,
                stack,
                kernel_stack,
                blocks,
                role: Role::App,
                flagged: false,
                reason: None,
                woke_after_signal: t.stats.as_ref().map(|s| s.wakes_after_signal).unwrap_or(0),
                at_signal: t.at_signal.clone(),
                exited_after_ms: t.exited_ns.map(rel),
                ns_tid: t.ns_tid,
                cpu_ms,
                spin_samples: t.spin_samples.clone(),
            });
        }
        threads.sort_by_key(|t| (t.pid, t.tid));

        let spin: BTreeMap<u32, f64> = self
            .threads
            .values()
            .map(|t| (t.tid, runnable_share(&t.cpu_after_signal)))
            .collect();
        // Programs rename their main thread after start: take the current name if alive.
        for p in self.procs.values_mut().filter(|p| p.exited_ns.is_none()) {
            if let Some(c) = procfs::read_comm(p.pid, p.pid) {
                p.comm = c;
            }
        }
        // The report is about the process that got the shutdown signal (a sidecar watches a
        // unit whose main process changes with restarts), else the first one watched.
        let main_pid = self
            .main_pid
            .filter(|p| match &self.episode_pids {
                Some(signalled) => signalled.contains(p),
                None => true,
            })
            .or_else(|| {
                self.signals
                    .first()
                    .map(|s| s.tgid)
                    .filter(|p| self.procs.contains_key(p))
            })
            .or(self.main_pid)
            .unwrap_or(0);
        let target = self
            .procs
            .get(&main_pid)
            .map(ProcTrack::info)
            .unwrap_or_else(|| ProcTrack::read(main_pid, None).info());
        let children: Vec<TargetInfo> = self
            .procs
            .values()
            .filter(|p| p.pid != main_pid)
            .map(ProcTrack::info)
            .collect();
        // The shutdown is about the processes it reached (all of them when none was signalled).
        let judged: Vec<u32> = self
            .episode_pids
            .clone()
            .unwrap_or_else(|| self.procs.keys().copied().collect());
        let process_exit_ns = judged
            .iter()
            .map(|p| self.procs.get(p).and_then(|t| t.exited_ns))
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max());

        let mut timeline: Vec<TimelineEntry> = self
            .timeline
            .iter()
            .map(|(ts, ev, tid)| TimelineEntry {
                t_ms: rel(*ts),
                event: ev.clone(),
                tid: *tid,
            })
            .collect();
        timeline.sort_by_key(|e| e.t_ms);

        let mut notes = self.notes.clone();
        for p in self.procs.values() {
            let unknown = threads.iter().filter(|t| t.pid == p.pid).any(|t| {
                t.stack.iter().any(|f| {
                    // Unknown addresses, or V8's interpreter trampoline standing in for JS.
                    f.function.is_none()
                        || f.function.as_deref() == Some("Builtins_InterpreterEntryTrampoline")
                })
            });
            let has_map = runtime::perf_map_path(p.pid, p.ns_pid).exists();
            if let Some(h) = runtime::symbolization_hint(p.runtime, p.pid, has_map, unknown) {
                notes.push(h);
            }
        }
        if self.exited_not_listed > 0 {
            notes.push(format!(
                "{} short-lived threads exited without blocking past the threshold and are not listed (thread churn)",
                self.exited_not_listed
            ));
        }
        if self.timeline.len() >= MAX_TIMELINE {
            notes.push(format!("the timeline is cut at {MAX_TIMELINE} entries"));
        }
        match end {
            EndReason::TargetExited if self.shutdown_signal().is_none() => notes.push(
                "the target exited while being watched; the report shows what was seen until then"
                    .into(),
            ),
            EndReason::Interrupted => notes.push("interrupted before the end of the watch".into()),
            _ => {}
        }
        if counters.dropped() > 0 {
            notes.push(format!(
                "the kernel side dropped {} events (ring buffer or storage full): counts and stacks may be incomplete",
                counters.dropped()
            ));
        }

        // Lock owners, wakers and deadlock cycles (while the target is alive to be read).
        let wakers: Vec<(u32, u32, u64, u64)> = self
            .threads
            .values()
            .chain(self.exited.iter())
            .filter_map(|t| {
                let st = t.stats.as_ref()?;
                (st.woke_addr != 0).then_some((t.pid, t.tid, st.woke_addr, t.wakes.1))
            })
            .collect();
        crate::locks::annotate(&mut threads, crate::stack::memory::read_u32, &wakers, now);
        describe_fd_waits(&mut threads);
        let deadlocks = crate::locks::find_cycles(&threads);

        let runtimes: BTreeMap<u32, Runtime> =
            self.procs.values().map(|p| (p.pid, p.runtime)).collect();
        let ctx = verdict::Context {
            judged_pids: &judged,
            runtimes: &runtimes,
            shutdown: self.signals.first(),
            grace_ms: self.opts.grace.as_millis() as u64,
            process_exit_ns,
            attach_ns: self.attach_ns,
            now_ns: now,
            end,
            cpu_share_after_signal: &spin,
        };
        let judged = verdict::judge(&mut threads, &ctx, &deadlocks);
        if let Some(sig) = self.signals.first() {
            let at = diff_ms(sig.ts_ns, self.attach_ns);
            let grace = self.opts.grace.as_millis() as i64;
            if process_exit_ns.is_none() && matches!(end, EndReason::GraceExpired) {
                timeline.push(TimelineEntry {
                    t_ms: grace,
                    event: "still alive at the end of the grace period".into(),
                    tid: None,
                });
            }
            let _ = at;
        }

        Report {
            schema: SCHEMA,
            target,
            children,
            verdict: judged.verdict,
            shutdown: judged.shutdown,
            summary: judged.summary,
            threads,
            deadlocks,
            slow_calls: std::mem::take(&mut self.slow_calls),
            slow_calls_total: self.slow_calls_total,
            timeline,
            dropped_events: counters.dropped(),
            drops: counters,
            session: SessionInfo {
                stallprobe_version: env!("CARGO_PKG_VERSION"),
                hook: self.probes.hook,
                threshold_ms: self.opts.threshold.as_secs_f64() * 1000.0,
                interval_ms: self.opts.interval.as_secs_f64() * 1000.0,
                watched_ms: now.saturating_sub(self.attach_ns) / 1_000_000,
                peak_rss_kb: std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| {
                        procfs::status_field(&s, "VmHWM")
                            .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    })
                    .unwrap_or(0),
                probed_calls: Call::ALL
                    .iter()
                    .filter(|c| !self.probes.skipped_calls.contains(c))
                    .map(|c| c.name())
                    .collect(),
                unprobed_calls: self.probes.skipped_calls.iter().map(|c| c.name()).collect(),
            },
            notes,
        }
    }
}

/// Describe the objects behind the fds that live threads wait on (one /proc scan per process).
fn describe_fd_waits(threads: &mut [ThreadReport]) {
    let mut by_pid: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for t in threads.iter().filter(|t| t.state != ThreadState::Exited) {
        if let Some(Wait::Fd { fd, .. }) = &t.wait {
            by_pid.entry(t.pid).or_default().push(*fd);
        }
    }
    for (pid, mut fds) in by_pid {
        fds.sort_unstable();
        fds.dedup();
        let objs = crate::waits::describe_fds(pid, &fds);
        let found: BTreeMap<u64, crate::report::FdObject> = fds
            .into_iter()
            .zip(objs)
            .filter_map(|(fd, o)| Some((fd, o?)))
            .collect();
        for t in threads
            .iter_mut()
            .filter(|t| t.pid == pid && t.state != ThreadState::Exited)
        {
            if let Some(Wait::Fd { fd, object, .. }) = t.wait.as_mut() {
                *object = found.get(fd).cloned();
            }
        }
    }
}

/// A thread's observation as the report describes it (state, syscall, wait).
fn describe_obs(pid: u32, o: &Observation, now: u64) -> AtSignal {
    let syscall = o.nr.map(|nr| match Call::from_nr(nr) {
        Some(c) => c.name().to_string(),
        None => syscalls::name(nr),
    });
    let wait = match &o.call {
        Some(c) => wait_of_call(pid, c, now),
        None => o.nr.and_then(|nr| {
            syscalls::first_arg_is_fd(nr).then(|| Wait::Fd {
                fd: o.args[0],
                target: procfs::read_fd_target(pid, o.args[0]),
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

/// Share of the time since the signal that a thread was runnable: on a CPU or waiting for one
/// (1.0 = it never slept). Waiting time counts so that a spinner on a busy machine, which gets
/// only part of a CPU, is still recognised.
fn runnable_share(samples: &[(u64, u64, u64)]) -> f64 {
    match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if b.0 > a.0 + 50_000_000 => {
            let busy = b.1.saturating_sub(a.1) + b.2.saturating_sub(a.2);
            (busy as f64 / (b.0 - a.0) as f64).min(1.0)
        }
        _ => 0.0,
    }
}

/// Reconstruct a probed call from /proc's syscall arguments (calls that began before attach).
fn call_from_args(call: Call, args: &[u64; 6], start_ns: u64) -> Option<CallRecord> {
    use probe_ebpf::futex_op;
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
pub fn wait_of_call(pid: u32, c: &CallRecord, now: u64) -> Option<Wait> {
    let timeout_ms = timeout_ms(&c.timeout, now);
    Some(match c.call {
        Call::Futex => Wait::futex(
            c.obj,
            c.futex_op_name().unwrap_or("FUTEX_WAIT").to_string(),
            timeout_ms,
            crate::stack::memory::read_u32(pid, c.obj),
        ),
        Call::FutexWaitv => Wait::futex(
            c.obj,
            format!("futex_waitv({})", c.arg),
            timeout_ms,
            crate::stack::memory::read_u32(pid, c.obj),
        ),
        _ => Wait::Fd {
            fd: c.obj,
            target: procfs::read_fd_target(pid, c.obj),
            timeout_ms,
            object: None,
        },
    })
}
