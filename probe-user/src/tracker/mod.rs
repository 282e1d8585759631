//! The tracker: everything a watch has learned, per process and per thread, from the kernel's
//! events ([`Tracker::handle_event`]) and the periodic looks at every target thread
//! ([`Tracker::observe`]). It decides nothing about the shutdown (that is `crate::verdict`) and
//! does no I/O of its own: /proc, the target's memory and its stacks come through a [`Host`],
//! the clock as arguments, and what the probes should change comes back as
//! [`ProbeCommand`]s. So it is unit-tested with a fake host (`tests.rs`).

mod events;
pub mod facts;
#[cfg(test)]
pub mod fake;
mod go;
pub mod host;
mod live;
mod observe;
mod process;
#[cfg(test)]
mod tests;
mod thread;

use std::collections::{BTreeMap, VecDeque};

use probe_ebpf::{CallStats, HIST_BUCKETS, NUM_CALLS};

pub use facts::ThreadFacts;
pub use go::GoroutineFacts;
pub use host::{GoLook, Host, ProcessInfo};
pub use live::LiveEvent;
use process::ProcTrack;
use thread::ThreadTrack;

use crate::{
    events::SignalInfo,
    report::{SlowCallReport, TargetInfo},
};

/// Exited threads kept for the report; more are counted, not listed.
const MAX_EXITED: usize = 2000;
/// Timeline entries kept.
const MAX_TIMELINE: usize = 2000;
/// Exited processes kept for the report outside a shutdown episode (a sidecar watching a
/// service that runs short-lived helpers for days); older ones are forgotten.
const MAX_EXITED_PROCESSES: usize = 64;
/// Shutdown signals kept (a flood of SIGHUPs must not grow memory).
const MAX_SIGNALS: usize = 100;
/// Keep at most this many slow calls with stacks in the report (all are counted).
const MAX_SLOW_CALLS: usize = 200;

/// The settings the tracker needs.
#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    /// A thread blocked this long is announced; a call this slow is a slow call.
    pub threshold_ns: u64,
    /// Time allowed after the first shutdown signal.
    pub grace_ns: u64,
}

/// A change the kernel side's target set needs (the session applies them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeCommand {
    /// The process is gone: its pid may be reused by an unrelated process.
    Untarget(u32),
}

/// Live threads by state, and threads blocked past the threshold by (call, role).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub threads: BTreeMap<&'static str, u64>,
    pub blocked: BTreeMap<(&'static str, &'static str), u64>,
}

/// Something that happened, for the report's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEvent {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    pub text: String,
    pub tid: Option<u32>,
}

pub struct Tracker {
    cfg: TrackerConfig,
    attach_ns: u64,
    /// The first process watched: the report's target unless a signal says otherwise.
    main_pid: Option<u32>,
    procs: BTreeMap<u32, ProcTrack>,
    threads: BTreeMap<u32, ThreadTrack>,
    /// Threads that exited (kept apart: their tid may be reused). Bounded: see `retire`.
    exited: VecDeque<ThreadTrack>,
    /// Exited threads dropped from `exited` to bound memory (thread churn).
    exited_not_listed: u64,
    /// Block-time statistics of every thread that exited, summed per call (metrics that only
    /// go up).
    retired_stats: [CallStats; NUM_CALLS],
    signals: Vec<SignalInfo>,
    /// The processes a shutdown signal reached in this episode: they are the ones judged.
    episode_pids: Option<Vec<u32>>,
    slow_calls: Vec<SlowCallReport>,
    slow_calls_total: u64,
    timeline: Vec<TimelineEvent>,
    /// Timeline entries from before the shutdown signal dropped to keep it bounded.
    timeline_dropped: u64,
    commands: Vec<ProbeCommand>,
    /// Goroutine looks of Go processes.
    go: BTreeMap<u32, go::GoTrack>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig, now_ns: u64) -> Tracker {
        Tracker {
            cfg,
            attach_ns: now_ns,
            main_pid: None,
            procs: BTreeMap::new(),
            threads: BTreeMap::new(),
            exited: VecDeque::new(),
            exited_not_listed: 0,
            retired_stats: [CallStats {
                count: 0,
                total_ns: 0,
                max_ns: 0,
                buckets: [0; HIST_BUCKETS],
            }; NUM_CALLS],
            signals: Vec::new(),
            episode_pids: None,
            slow_calls: Vec::new(),
            slow_calls_total: 0,
            timeline: Vec::new(),
            timeline_dropped: 0,
            commands: Vec::new(),
            go: BTreeMap::new(),
        }
    }

    /// Watch process `pid` (already in the kernel's target set). The first one added is the
    /// report's target, and the watch counts from then.
    pub fn add_process(&mut self, pid: u32, now_ns: u64, host: &mut dyn Host) {
        // An exited process's pid now names another process: start afresh.
        if self.procs.get(&pid).is_some_and(|p| !p.alive()) {
            self.procs.remove(&pid);
            self.go.remove(&pid);
            host.forget(pid);
        }
        self.procs
            .entry(pid)
            .or_insert_with(|| ProcTrack::read(pid, host));
        host.prepare(pid);
        if self.main_pid.is_none() {
            self.main_pid = Some(pid);
            self.attach_ns = now_ns;
        }
    }

    /// Read a process's program again (it exec'd).
    pub fn refresh_process(&mut self, pid: u32, host: &mut dyn Host) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.set_info(host.process_info(pid));
        }
        host.forget(pid);
        host.prepare(pid);
    }

    /// What the probes should change (taken: each command is returned once).
    pub fn take_probe_commands(&mut self) -> Vec<ProbeCommand> {
        std::mem::take(&mut self.commands)
    }

    pub fn config(&self) -> TrackerConfig {
        self.cfg
    }

    /// When the watch started (CLOCK_MONOTONIC ns).
    pub fn attach_ns(&self) -> u64 {
        self.attach_ns
    }

    /// The first shutdown signal to a target, if one came.
    pub fn shutdown_signal(&self) -> Option<&SignalInfo> {
        self.signals.first()
    }

    /// When the verdict is due: the first shutdown signal plus the grace period.
    pub fn grace_deadline_ns(&self) -> Option<u64> {
        self.shutdown_signal().map(|s| s.ts_ns + self.cfg.grace_ns)
    }

    /// Every watched process has exited.
    pub fn all_exited(&self) -> bool {
        !self.procs.is_empty() && self.procs.values().all(|p| !p.alive())
    }

    /// Every process a shutdown signal reached has exited (others, e.g. a restarted unit's new
    /// process or a bystander in the same cgroup, do not count).
    pub fn episode_exited(&self) -> bool {
        match &self.episode_pids {
            Some(pids) => pids
                .iter()
                .all(|p| self.procs.get(p).is_none_or(|t| !t.alive())),
            None => self.all_exited(),
        }
    }

    /// Pids of the live watched processes.
    pub fn live_pids(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.alive())
            .map(|p| p.pid)
            .collect()
    }

    /// Whether `pid` is watched and alive (an exited one's pid may name a new process).
    pub fn watches(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(ProcTrack::alive)
    }

    /// Processes known, alive and exited (bounded: see [`Tracker::forget_old_exits`]).
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Forget the shutdown episode just reported: signals, exited processes and threads,
    /// timeline, slow calls. The watch goes on (the session also clears the kernel side's
    /// shutdown time).
    pub fn reset_episode(&mut self, host: &mut dyn Host) {
        self.signals.clear();
        self.episode_pids = None;
        self.timeline.clear();
        self.timeline_dropped = 0;
        self.slow_calls.clear();
        self.slow_calls_total = 0;
        self.exited.clear();
        self.exited_not_listed = 0;
        let gone: Vec<u32> = self
            .procs
            .values()
            .filter(|p| !p.alive())
            .map(|p| p.pid)
            .collect();
        for pid in gone {
            self.procs.remove(&pid);
            host.forget(pid);
            if self.main_pid == Some(pid) {
                self.main_pid = self.procs.keys().next().copied();
            }
        }
        for t in self.threads.values_mut() {
            t.at_signal = None;
            t.cpu_after_signal.clear();
            t.spin_samples.clear();
        }
        self.reset_go_episode();
    }

    /// Record how a process exited, as its parent saw it (run mode reaps its child).
    pub fn note_exit_status(
        &mut self,
        pid: u32,
        exit_code: Option<i32>,
        killed_by: Option<i32>,
        now_ns: u64,
    ) {
        let last_thread_exit = self.last_thread_exit(pid);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exit_code = exit_code;
            p.killed_by = killed_by.map(|s| crate::signals::name(s as u32));
            if p.exited_ns.is_none() {
                p.exited_ns = Some(last_thread_exit.unwrap_or(now_ns));
            }
        }
        let at = last_thread_exit.unwrap_or(now_ns);
        self.mark_threads_of_exited(pid, at);
        self.commands.push(ProbeCommand::Untarget(pid));
    }

    /// Threads of an exited process are exited, even if their exit events were missed.
    fn mark_threads_of_exited(&mut self, pid: u32, at: u64) {
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

    /// The process the report is about: the one that got the shutdown signal (a sidecar
    /// watches a unit whose main process changes with restarts), else the first one watched.
    pub fn report_pid(&self) -> u32 {
        self.main_pid
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
            .unwrap_or(0)
    }

    /// The report's target and the other watched processes.
    pub fn targets(&self, host: &dyn Host) -> (TargetInfo, Vec<TargetInfo>) {
        let main = self.report_pid();
        let info = |p: &ProcTrack| TargetInfo {
            go_version: self.go_version(p.pid),
            ..p.info()
        };
        let target = match self.procs.get(&main) {
            Some(p) => info(p),
            None => ProcTrack::read(main, host).info(),
        };
        let children = self
            .procs
            .values()
            .filter(|p| p.pid != main)
            .map(info)
            .collect();
        (target, children)
    }

    /// Programs rename their threads after start: take the current process names.
    pub fn refresh_names(&mut self, host: &dyn Host) {
        for p in self.procs.values_mut().filter(|p| p.alive()) {
            if let Some(c) = host.comm(p.pid, p.pid) {
                p.comm = c;
            }
        }
    }

    /// The processes the shutdown is about: those it reached (all when none was signalled).
    pub fn judged_pids(&self) -> Vec<u32> {
        self.episode_pids
            .clone()
            .unwrap_or_else(|| self.procs.keys().copied().collect())
    }

    /// When the last judged process exited (None: one is alive).
    pub fn judged_exit_ns(&self) -> Option<u64> {
        self.judged_pids()
            .iter()
            .map(|p| self.procs.get(p).and_then(|t| t.exited_ns))
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    }

    /// Per process: its runtime.
    pub fn runtimes(&self) -> BTreeMap<u32, crate::report::Runtime> {
        self.procs.values().map(|p| (p.pid, p.runtime)).collect()
    }

    /// Per process: its pid in its own namespace, when it differs.
    pub fn ns_pids(&self) -> BTreeMap<u32, Option<u32>> {
        self.procs.values().map(|p| (p.pid, p.ns_pid)).collect()
    }

    pub fn slow_calls(&self) -> &[SlowCallReport] {
        &self.slow_calls
    }

    pub fn slow_calls_total(&self) -> u64 {
        self.slow_calls_total
    }

    pub fn timeline(&self) -> &[TimelineEvent] {
        &self.timeline
    }

    /// Whether the timeline hit its cap (entries were dropped or refused).
    pub fn timeline_full(&self) -> bool {
        self.timeline_dropped > 0 || self.timeline.len() >= MAX_TIMELINE
    }

    /// Exited threads not listed (thread churn past the cap).
    pub fn exited_not_listed(&self) -> u64 {
        self.exited_not_listed
    }

    /// Per-call block statistics of every thread that ever ran, live and exited.
    pub fn total_stats(&self) -> [CallStats; NUM_CALLS] {
        let mut all = self.retired_stats;
        for st in self.threads.values().filter_map(|t| t.stats.as_ref()) {
            add_stats(&mut all, &st.stats);
        }
        all
    }

    /// Live threads counted by state, and those blocked past the threshold by (call, role):
    /// the sidecar's gauges.
    pub fn census(&self, now: u64) -> Census {
        let mut c = Census::default();
        for t in self.threads.values() {
            let Some(o) = &t.obs else { continue };
            *c.threads.entry(o.state.as_str()).or_default() += 1;
            let long = o
                .since
                .is_some_and(|s| now.saturating_sub(s.start_ns) >= self.cfg.threshold_ns);
            if o.state == crate::report::ThreadState::Blocked && long {
                let call =
                    o.nr.and_then(probe_ebpf::Call::from_nr)
                        .map(|c| c.name())
                        .unwrap_or("other");
                let stack = t
                    .stacks
                    .as_ref()
                    .map(|s| s.stacks.user.as_slice())
                    .unwrap_or(&[]);
                let role = self.role_of(t.pid, &t.name, Some(call), stack);
                *c.blocked.entry((call, role.as_str())).or_default() += 1;
            }
        }
        c
    }

    /// Move an exited thread to the `exited` list, keeping it bounded: under thread churn the
    /// oldest short-lived threads are dropped (and counted), so memory stays flat.
    fn retire(&mut self, t: ThreadTrack) {
        if let Some(st) = &t.stats {
            add_stats(&mut self.retired_stats, &st.stats);
        }
        self.exited.push_back(t);
        if self.exited.len() > MAX_EXITED {
            let threshold = self.cfg.threshold_ns;
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
                o.state = crate::report::ThreadState::Exited;
            }
            self.retire(t);
        }
    }

    /// Add to the timeline. Full, it drops its oldest entry from before the shutdown signal
    /// (days of a sidecar's history must not crowd out the episode); entries after the signal
    /// are kept first come.
    fn add_timeline(&mut self, ts_ns: u64, text: String, tid: Option<u32>) {
        if self.timeline.len() >= MAX_TIMELINE {
            let signal = self.shutdown_signal().map(|s| s.ts_ns);
            if signal.is_some_and(|s| self.timeline[0].ts_ns >= s) {
                return;
            }
            self.timeline.remove(0);
            self.timeline_dropped += 1;
        }
        self.timeline.push(TimelineEvent { ts_ns, text, tid });
    }

    /// Outside a shutdown episode, exited processes past [`MAX_EXITED_PROCESSES`] are
    /// forgotten, oldest exit first (never the report's target).
    fn forget_old_exits(&mut self) {
        if self.shutdown_signal().is_some() {
            return;
        }
        let mut exited: Vec<(u64, u32)> = self
            .procs
            .values()
            .filter(|p| Some(p.pid) != self.main_pid)
            .filter_map(|p| Some((p.exited_ns?, p.pid)))
            .collect();
        if exited.len() <= MAX_EXITED_PROCESSES {
            return;
        }
        exited.sort_unstable();
        for &(_, pid) in &exited[..exited.len() - MAX_EXITED_PROCESSES] {
            self.procs.remove(&pid);
            self.go.remove(&pid);
        }
    }

    fn last_thread_exit(&self, pid: u32) -> Option<u64> {
        self.exited
            .iter()
            .filter(|t| t.pid == pid)
            .filter_map(|t| t.exited_ns)
            .max()
    }

    /// ms from the first shutdown signal to `ts` (None: no signal yet).
    fn rel_signal_ms(&self, ts: u64) -> Option<i64> {
        self.shutdown_signal()
            .map(|s| crate::clock::diff_ms(ts, s.ts_ns))
    }

    fn all_tracks(&self) -> impl Iterator<Item = &ThreadTrack> {
        self.threads.values().chain(self.exited.iter())
    }
}

fn add_stats(acc: &mut [CallStats; NUM_CALLS], add: &[CallStats; NUM_CALLS]) {
    for (a, s) in acc.iter_mut().zip(add.iter()) {
        a.count += s.count;
        a.total_ns += s.total_ns;
        a.max_ns = a.max_ns.max(s.max_ns);
        for (x, y) in a.buckets.iter_mut().zip(s.buckets.iter()) {
            *x += *y;
        }
    }
}
