//! A watching session: the I/O shell around the [`Tracker`]. It owns the loaded probes, the
//! event ring buffer and the task iterator; it feeds what they report to the tracker, applies
//! the tracker's [`ProbeCommand`]s, and at the end gathers what the report needs from the live
//! target (lock owners, fd objects) and has `crate::assemble` build it.
//!
//! Every mode (`--pid`, `run`, `watch`) drives one through `crate::modes::event_loop`.

mod host;
mod runtimes;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use probe_ebpf::Call;
use tokio::io::unix::AsyncFd;

pub use host::ProcHost;
pub use runtimes::RuntimeAttach;

use crate::{
    assemble::{self, Findings},
    bpf::{HookChoice, ProbeOptions, Probes},
    clock::mono_ns,
    error::StallError,
    events::decode_event,
    procfs,
    report::{Counters, Hook, Report, SessionInfo, ThreadState, Wait},
    signals,
    tracker::{Census, LiveEvent, ProbeCommand, ThreadFacts, Tracker, TrackerConfig},
    verdict::EndReason,
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
    /// When a language runtime may be attached to (a JVM's thread dump).
    pub runtime_attach: RuntimeAttach,
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
            runtime_attach: RuntimeAttach::WhenStalled,
        }
    }
}

/// Every this many looks, the task iterator also dumps the histograms.
const STATS_EVERY: u64 = 8;

pub struct Session {
    opts: SessionOptions,
    probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    host: ProcHost,
    tracker: Tracker,
    /// Notes about the session itself (hook fallback, calls not probed, failed looks).
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
            let using = match probes.hook {
                Hook::Sched => "the scheduler hook (sched_switch)",
                _ => "raw tracepoints",
            };
            notes.push(format!(
                "fentry is not available here ({why}); using {using}"
            ));
        }
        if !probes.skipped_calls.is_empty() {
            let names: Vec<&str> = probes.skipped_calls.iter().map(|c| c.name()).collect();
            notes.push(format!(
                "not probed on this kernel (it lacks them): {}",
                names.join(", ")
            ));
        }
        let tracker = Tracker::new(
            TrackerConfig {
                threshold_ns: opts.threshold.as_nanos() as u64,
                grace_ns: opts.grace.as_nanos() as u64,
                look_interval_ns: opts.interval.as_nanos() as u64,
            },
            mono_ns(),
        );
        Ok(Session {
            opts,
            probes,
            ring,
            host: ProcHost::new(),
            tracker,
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
        self.tracker.add_process(pid, mono_ns(), &mut self.host);
        Ok(())
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// What the watch has learned so far (read-only).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Record how a process exited, as its parent saw it (run mode reaps its child).
    pub fn note_exit_status(&mut self, pid: u32, exit_code: Option<i32>, killed_by: Option<i32>) {
        self.tracker
            .note_exit_status(pid, exit_code, killed_by, mono_ns());
        self.apply_commands();
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
        let interval = if self.tracker.shutdown_signal().is_some() {
            // Look more often during the grace period: exits and spin samples.
            self.opts.interval.min(Duration::from_millis(100))
        } else {
            self.opts.interval
        };
        if force_snapshot || now.saturating_sub(self.last_snapshot_ns) >= interval.as_nanos() as u64
        {
            self.snapshot(false, &mut live);
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
        let now = mono_ns();
        for e in events {
            self.tracker.handle_event(e, now, &mut self.host, live);
        }
        self.apply_commands();
    }

    /// Look at every target thread now. Histograms come along every few looks (and always
    /// with `with_stats`): they are most of the dump and change slowly.
    fn snapshot(&mut self, with_stats: bool, live: &mut Vec<LiveEvent>) {
        self.snapshots_taken += 1;
        let with_stats = with_stats || self.snapshots_taken % STATS_EVERY == 1;
        match self.probes.snapshot(with_stats) {
            Ok(snaps) => {
                self.tracker
                    .observe(&snaps, mono_ns(), &mut self.host, live);
                self.apply_commands();
            }
            Err(e) => {
                let msg = format!("task snapshot failed: {e}");
                if !self.notes.contains(&msg) {
                    self.notes.push(msg);
                }
            }
        }
    }

    fn apply_commands(&mut self) {
        for c in self.tracker.take_probe_commands() {
            match c {
                ProbeCommand::Untarget(pid) => {
                    let _ = self.probes.remove_target(pid);
                }
            }
        }
    }

    /// Forget the shutdown episode just reported and go on watching (the sidecar).
    pub fn reset_episode(&mut self) {
        self.tracker.reset_episode(&mut self.host);
        self.probes.reset_shutdown();
    }

    /// The kernel side's counters.
    pub fn counters(&self) -> Counters {
        self.probes.counters()
    }

    /// Processes with state kept: (the tracker's records, alive and recently exited; those
    /// with unwind tables, symbols and pidfds loaded). Both stay bounded on long runs.
    pub fn tracked_processes(&self) -> (usize, usize) {
        (self.tracker.process_count(), self.host.loaded_processes())
    }

    /// Live threads by state and blocked ones by call and role, now.
    pub fn census(&self) -> Census {
        self.tracker.census(mono_ns())
    }

    /// End the session and report.
    pub fn finish(mut self, end: EndReason) -> Report {
        self.report(end)
    }

    /// The report as of now. The watch can go on afterwards (the sidecar reports each shutdown
    /// episode): this takes a last look and stacks where they are missing, but forgets nothing.
    pub fn report(&mut self, end: EndReason) -> Report {
        let mut sink = Vec::new();
        self.drain_ring(&mut sink);
        if !self.tracker.live_pids().is_empty() {
            self.snapshot(true, &mut sink);
        }
        let now = mono_ns();
        let mut notes = self.notes.clone();
        notes.extend(
            self.tracker
                .prepare_report(now, &mut self.host, self.opts.max_stacks),
        );
        self.tracker.refresh_names(&self.host);
        let mut facts = self.tracker.thread_facts(now, &self.host, self.clk_tck);
        let (runtimes, runtime_notes) = self.read_runtimes(&mut facts, end);
        let findings = Findings {
            runtimes,
            runtime_notes,
            ..self.inspect(&facts, now)
        };
        let (target, children) = self.tracker.targets(&self.host);
        let session = self.session_info(now);
        notes.extend(self.host.symbol_notes());
        assemble::report(assemble::Inputs {
            tracker: &self.tracker,
            facts,
            findings,
            target,
            children,
            end,
            now_ns: now,
            counters: self.probes.counters(),
            session,
            notes,
        })
    }

    /// Look at the live target for what the report says about waits: lock owners (target
    /// memory), the objects behind fds (/proc), perf maps.
    fn inspect(&self, facts: &[ThreadFacts], now: u64) -> Findings {
        let host = &self.host;
        let futex = crate::locks::futex_findings(
            facts,
            |pid, addr| crate::tracker::Host::read_u32(host, pid, addr),
            now,
        );
        let mut fds: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for t in facts.iter().filter(|t| t.state != ThreadState::Exited) {
            if let Some(Wait::Fd { fd, .. }) = &t.wait {
                fds.entry(t.pid).or_default().push(*fd);
            }
        }
        let mut fd_objects = BTreeMap::new();
        for (pid, mut list) in fds {
            list.sort_unstable();
            list.dedup();
            let objs = crate::waits::describe_fds(pid, &list);
            for (fd, obj) in list.into_iter().zip(objs) {
                if let Some(o) = obj {
                    fd_objects.insert((pid, fd), o);
                }
            }
        }
        let mut perf_maps = BTreeSet::new();
        let mut skipped_perf_maps = BTreeMap::new();
        for pid in self.tracker.ns_pids().into_keys() {
            match self.host.perf_map_state(pid) {
                (true, _) => {
                    perf_maps.insert(pid);
                }
                (false, Some(why)) => {
                    skipped_perf_maps.insert(pid, why);
                }
                (false, None) => {}
            }
        }
        Findings {
            futex,
            fd_objects,
            perf_maps,
            skipped_perf_maps,
            runtimes: BTreeMap::new(),
            runtime_notes: Vec::new(),
        }
    }

    fn session_info(&self, now: u64) -> SessionInfo {
        SessionInfo {
            stallprobe_version: env!("CARGO_PKG_VERSION"),
            hook: self.probes.hook,
            threshold_ms: self.opts.threshold.as_secs_f64() * 1000.0,
            interval_ms: self.opts.interval.as_secs_f64() * 1000.0,
            watched_ms: now.saturating_sub(self.tracker.attach_ns()) / 1_000_000,
            peak_rss_kb: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    procfs::status_field(&s, "VmHWM")
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0),
            goroutine_read_ms: self.tracker.go_look_ms(),
            probed_calls: Call::ALL
                .iter()
                .filter(|c| !self.probes.skipped_calls.contains(c))
                .map(|c| c.name())
                .collect(),
            unprobed_calls: self.probes.skipped_calls.iter().map(|c| c.name()).collect(),
        }
    }
}
