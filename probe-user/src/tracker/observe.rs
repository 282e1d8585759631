//! A look at every target thread (the task iterator's records): what each one is doing now,
//! which ones crossed the threshold, which threads and processes are gone.

use std::collections::HashSet;

use probe_ebpf::Call;

use super::{
    LiveEvent, ProbeCommand, Tracker,
    facts::{call_from_args, wait_of_call},
    host::Host,
    process::ProcTrack,
    thread::{CpuSample, Observation, Since, StacksAt, ThreadTrack, Wakes},
};
use crate::{
    events::TaskSnapshot,
    procfs::SyscallState,
    report::{BlockedSince, Runtime, ThreadState},
    signals,
    stack::top_app_frame,
    syscalls,
};

/// How far two estimates of when a thread last ran may differ and still be the same block.
const SCHED_JITTER_NS: u64 = 20_000_000;
/// Stack samples kept per running thread after the shutdown signal.
const MAX_SPIN_SAMPLES: usize = 5;

impl Tracker {
    /// Take in one look at every target thread (`snaps`: one record per live thread).
    pub fn observe(
        &mut self,
        snaps: &[TaskSnapshot],
        now_ns: u64,
        host: &mut dyn Host,
        live: &mut Vec<LiveEvent>,
    ) {
        let mut seen = HashSet::new();
        for s in snaps {
            if let std::collections::btree_map::Entry::Vacant(e) = self.procs.entry(s.tgid) {
                // A child the kernel side followed before we saw its fork event.
                e.insert(ProcTrack::read(s.tgid, host));
                host.prepare(s.tgid);
            }
            seen.insert(s.tid);
            self.observe_thread(s, now_ns, host, live);
        }
        // Threads that vanished without an exit event (event dropped, or exited between looks).
        let gone: Vec<u32> = self
            .threads
            .iter()
            .filter(|(tid, t)| !seen.contains(*tid) && !host.thread_exists(t.pid, **tid))
            .map(|(tid, _)| *tid)
            .collect();
        for tid in gone {
            self.mark_exited(tid, now_ns);
        }
        // Runtimes load late (a JVM's libjvm, a Python's libpython): ask again while unknown.
        for p in self.procs.values_mut().filter(|p| p.alive()) {
            if matches!(p.runtime, Runtime::Native | Runtime::Tokio)
                && let Some(rt) = host.late_runtime(p.pid)
            {
                p.runtime = rt;
            }
        }
        self.process_exits(now_ns, host, live);
        self.go_looks_before_signal(now_ns, host);
    }

    fn process_exits(&mut self, now_ns: u64, host: &mut dyn Host, live: &mut Vec<LiveEvent>) {
        let pids: Vec<u32> = self.live_pids();
        for pid in pids {
            if host.process_alive(pid) {
                continue;
            }
            let status = host.zombie_status(pid);
            let at = self.last_thread_exit(pid).unwrap_or(now_ns);
            let after = self.rel_signal_ms(at);
            if let Some(p) = self.procs.get_mut(&pid) {
                p.exited_ns = Some(at);
                if p.exit_code.is_none() && p.killed_by.is_none() {
                    // A zombie's stat still holds its exit status (until the parent reaps it).
                    if let Some(code) = status {
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
                self.add_timeline(at, format!("process {pid} exited"), None);
            }
            // Its pid may be reused by an unrelated process: stop probing it, and free what
            // was loaded to read it (unwind tables, symbols, its pidfd).
            self.commands.push(ProbeCommand::Untarget(pid));
            host.forget(pid);
            self.mark_threads_of_exited(pid, at);
        }
        self.forget_old_exits();
    }

    fn observe_thread(
        &mut self,
        s: &TaskSnapshot,
        now: u64,
        host: &mut dyn Host,
        live: &mut Vec<LiveEvent>,
    ) {
        let after_signal = self.shutdown_signal().is_some();
        let threshold = self.cfg.threshold_ns;
        let attach_ns = self.attach_ns;
        let t = self.threads.entry(s.tid).or_insert_with(|| {
            ThreadTrack::new(s.tid, s.tgid, &s.comm, host.ns_tid(s.tgid, s.tid))
        });
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
            && st.woke_count != t.wakes.count
        {
            t.wakes = Wakes {
                count: st.woke_count,
                changed_ns: now,
            };
        }
        if t.first_cpu_ticks.is_none() {
            let ticks = host.cpu_ticks(s.tgid, s.tid).unwrap_or(0);
            t.first_cpu_ticks = Some(ticks);
            t.cpu_ticks = ticks;
        }
        if after_signal && let Some((run_ns, wait_ns)) = host.schedstat(s.tgid, s.tid) {
            t.cpu_after_signal.push(CpuSample {
                at_ns: now,
                run_ns,
                wait_ns,
            });
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
        let obs = match t.obs.clone().filter(|_| unchanged) {
            Some(prev) => prev,
            None => observation(s, t.obs.as_ref(), running, now, attach_ns, host),
        };

        let key = obs.block_key();
        let (pid, tid) = (t.pid, t.tid);
        // Announce a thread that newly crossed the threshold in a probed call, with its stack.
        if obs.state == ThreadState::Blocked
            && let Some(since) = obs.since
            && now.saturating_sub(since.start_ns) >= threshold
            && t.announced != key
        {
            t.announced = key;
            let stacks = host.stacks(pid, tid, obs.regs, &obs.kstack);
            let syscall = obs
                .nr
                .and_then(Call::from_nr)
                .map(|c| c.name().to_string())
                .unwrap_or_default();
            let wait = obs
                .call
                .as_ref()
                .and_then(|c| wait_of_call(pid, c, now, host));
            let name = t.name.clone();
            t.stacks = Some(StacksAt {
                key,
                stacks: stacks.clone(),
            });
            t.obs = Some(obs.clone());
            let role = self.role_of(pid, &name, Some(&syscall), &stacks.user);
            live.push(LiveEvent::Blocked {
                tid,
                name,
                syscall,
                wait,
                blocked_ms: now.saturating_sub(since.start_ns) / 1_000_000,
                at: top_app_frame(&stacks.user),
                role,
            });
            return;
        }
        // After a shutdown signal, sample where running threads are.
        if obs.state == ThreadState::Running
            && after_signal
            && t.spin_samples.len() < MAX_SPIN_SAMPLES
        {
            let user = host.user_stack(pid, obs.regs);
            if !user.is_empty() {
                t.spin_samples.push(user);
            }
        }
        t.obs = Some(obs);
    }
}

/// What a thread is doing now, from its snapshot record and (for calls the probes did not see
/// start) /proc.
fn observation(
    s: &TaskSnapshot,
    prev: Option<&Observation>,
    running: bool,
    now: u64,
    attach_ns: u64,
    host: &dyn Host,
) -> Observation {
    if running {
        return Observation::running(s.regs, s.kstack.clone());
    }
    // A call interrupted by a signal is still the thread's wait if the kernel restarted it
    // (same syscall, or restart_syscall); otherwise the record is stale.
    let in_flight = s.in_flight().filter(|c| {
        c.interrupted_ns == 0
            || matches!(host.syscall(s.tgid, s.tid),
                Some(SyscallState::InSyscall { nr, .. }) if nr == c.call.nr() || nr == syscalls::RESTART_SYSCALL)
    });
    if let Some(c) = in_flight {
        return Observation {
            state: ThreadState::Blocked,
            nr: Some(c.call.nr()),
            args: [c.obj, c.arg, 0, 0, 0, 0],
            call: Some(c),
            since: Some(Since {
                start_ns: c.start_ns,
                how: BlockedSince::Probe,
            }),
            regs: s.regs,
            kstack: s.kstack.clone(),
        };
    }
    // Asleep, but not in a call the probes saw start: since before attach, or a call outside
    // the probed set. /proc says which.
    let fresh = match s.last_ran_mono_ns() {
        Some(t) if t <= now => Since {
            start_ns: t,
            how: BlockedSince::Sched,
        },
        _ => Since {
            start_ns: attach_ns,
            how: BlockedSince::Attach,
        },
    };
    match host.syscall(s.tgid, s.tid) {
        Some(SyscallState::InSyscall { nr, args, .. }) => {
            // The estimate jitters by the reader's own scheduling; keep the first one while the
            // thread stays in the same call and has not run since.
            let since = match prev {
                Some(p)
                    if p.nr == Some(nr)
                        && p.args[0] == args[0]
                        && p.state != ThreadState::Running
                        && p.since.is_some_and(|ps| {
                            ps.how != BlockedSince::Probe
                                && fresh.start_ns < ps.start_ns + SCHED_JITTER_NS
                        }) =>
                {
                    p.since.unwrap_or(fresh)
                }
                _ => fresh,
            };
            let call = Call::from_nr(nr).and_then(|c| call_from_args(c, &args, since.start_ns));
            Observation {
                state: if call.is_some() {
                    ThreadState::Blocked
                } else {
                    ThreadState::Sleeping
                },
                nr: Some(nr),
                args,
                call,
                since: Some(since),
                regs: s.regs,
                kstack: s.kstack.clone(),
            }
        }
        Some(SyscallState::Running) => Observation::running(s.regs, s.kstack.clone()),
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
}
