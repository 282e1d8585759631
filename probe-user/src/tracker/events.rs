//! Handling the kernel side's ring-buffer events: slow calls, shutdown signals, thread exits,
//! forks and execs.

use super::{
    LiveEvent, MAX_SIGNALS, MAX_SLOW_CALLS, Tracker,
    facts::{describe_obs, wait_of_call},
    host::Host,
    process::ProcTrack,
    thread::ThreadTrack,
};
use crate::{
    events::{Event, SignalInfo, SlowCall, ThreadExit},
    report::{Role, SlowCallReport, ThreadState},
    signals,
    stack::top_app_frame,
};

impl Tracker {
    /// Take in one decoded event; what is worth a live line is pushed to `live`.
    pub fn handle_event(
        &mut self,
        e: Event,
        now_ns: u64,
        host: &mut dyn Host,
        live: &mut Vec<LiveEvent>,
    ) {
        match e {
            Event::SlowCall(sc) => self.slow_call(*sc, host, live),
            Event::Signal(s) => self.signal(s, now_ns, host, live),
            Event::ThreadExit(x) => self.thread_exit(x, host, live),
            Event::Fork {
                parent_tgid,
                child_pid,
                followed,
                ts_ns,
                ..
            } => {
                if followed {
                    self.procs
                        .entry(child_pid)
                        .or_insert_with(|| ProcTrack::read(child_pid, host));
                    host.prepare(child_pid);
                }
                self.add_timeline(
                    ts_ns,
                    format!(
                        "pid {parent_tgid} started child process {child_pid}{}",
                        if followed { " (followed)" } else { "" }
                    ),
                    None,
                );
                live.push(LiveEvent::ChildStarted {
                    parent: parent_tgid,
                    pid: child_pid,
                    followed,
                });
            }
            Event::Exec { tgid, ts_ns, .. } => {
                self.refresh_process(tgid, host);
                let exe = self
                    .procs
                    .get(&tgid)
                    .map(|p| p.exe.clone())
                    .unwrap_or_default();
                self.add_timeline(ts_ns, format!("pid {tgid} exec'd {exe}"), None);
                live.push(LiveEvent::Exec { pid: tgid, exe });
            }
        }
    }

    fn signal(
        &mut self,
        s: SignalInfo,
        now_ns: u64,
        host: &mut dyn Host,
        live: &mut Vec<LiveEvent>,
    ) {
        let first = self.signals.is_empty();
        let pids = self.episode_pids.get_or_insert_with(Vec::new);
        if !pids.contains(&s.tgid) {
            pids.push(s.tgid);
        }
        if first {
            for t in self.threads.values_mut() {
                t.at_signal = t.obs.as_ref().map(|o| describe_obs(t.pid, o, now_ns, host));
            }
        }
        let name = signals::name(s.sig);
        self.add_timeline(
            s.ts_ns,
            format!(
                "{name} to pid {} from pid {} ({})",
                s.tgid, s.sender_tgid, s.sender_comm
            ),
            None,
        );
        live.push(LiveEvent::Signal {
            pid: s.tgid,
            signal: name,
            sender_pid: s.sender_tgid,
            sender_comm: s.sender_comm.clone(),
            first,
        });
        let pid = s.tgid;
        if self.signals.len() < MAX_SIGNALS {
            self.signals.push(s);
        }
        self.go_look_at_signal(pid, now_ns, host);
    }

    fn thread_exit(&mut self, x: ThreadExit, host: &mut dyn Host, live: &mut Vec<LiveEvent>) {
        let after = self.rel_signal_ms(x.ts_ns);
        // The thread may already have been moved to `exited` by a look that no longer saw
        // it: complete that entry rather than adding a second one.
        if !self.threads.contains_key(&x.tid)
            && let Some(t) = self
                .exited
                .iter_mut()
                .rev()
                .find(|t| t.tid == x.tid && !t.exit_event_seen)
        {
            t.exit_event_seen = true;
            t.exited_ns = Some(x.ts_ns);
            if x.state.is_some() {
                t.stats = x.state;
            }
            let name = t.name.clone();
            self.announce_exit(x.tid, name, x.ts_ns, after, live);
            return;
        }
        let mut t = match self.threads.remove(&x.tid) {
            Some(t) => t,
            None => ThreadTrack::new(x.tid, x.tgid, &x.comm, host.ns_tid(x.tgid, x.tid)),
        };
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
        self.announce_exit(x.tid, t.name.clone(), x.ts_ns, after, live);
        self.retire(t);
    }

    /// After a shutdown signal, a thread's exit goes on the timeline and the live lines (once:
    /// from its exit event, whether or not a look saw it gone first).
    fn announce_exit(
        &mut self,
        tid: u32,
        name: String,
        ts_ns: u64,
        after: Option<i64>,
        live: &mut Vec<LiveEvent>,
    ) {
        if self.shutdown_signal().is_none() {
            return;
        }
        self.add_timeline(ts_ns, format!("thread {tid} ({name}) exited"), Some(tid));
        live.push(LiveEvent::ThreadExited {
            tid,
            name,
            after_signal_ms: after,
        });
    }

    fn slow_call(&mut self, sc: SlowCall, host: &mut dyn Host, live: &mut Vec<LiveEvent>) {
        self.slow_calls_total += 1;
        let name = self
            .threads
            .get(&sc.tid)
            .or_else(|| self.exited.iter().rev().find(|t| t.tid == sc.tid))
            .map(|t| t.name.clone())
            .or_else(|| host.comm(sc.tgid, sc.tid))
            .unwrap_or_default();
        let wait = wait_of_call(sc.tgid, &sc.call, sc.end_ns, host);
        let keep = self.slow_calls.len() < MAX_SLOW_CALLS;
        let stack = if keep {
            host.stack_from_copy(sc.tgid, sc.regs, &sc.stack)
        } else {
            Vec::new()
        };
        let syscall = sc.call.call.name().to_string();
        let rep = SlowCallReport {
            tid: sc.tid,
            pid: sc.tgid,
            name: name.clone(),
            syscall: syscall.clone(),
            wait: wait.clone(),
            duration_ms: sc.dur_ns as f64 / 1e6,
            ended_at_ms: crate::clock::diff_ms(sc.end_ns, self.attach_ns),
            ret: sc.ret,
            stack,
        };
        live.push(LiveEvent::SlowCall {
            tid: sc.tid,
            name,
            syscall,
            wait,
            duration_ms: rep.duration_ms,
            at: top_app_frame(&rep.stack),
            role: self.role_of(sc.tgid, &rep.name, Some(&rep.syscall), &rep.stack),
        });
        if keep {
            self.slow_calls.push(rep);
        }
    }

    /// A thread's role by its process's runtime rules (`crate::runtime`).
    pub(super) fn role_of(
        &self,
        pid: u32,
        name: &str,
        syscall: Option<&str>,
        stack: &[crate::report::Frame],
    ) -> Role {
        let rt = self.procs.get(&pid).map(|p| p.runtime).unwrap_or_default();
        match crate::runtime::classify(rt, name, syscall, stack) {
            Some(_) => Role::Runtime,
            None => Role::App,
        }
    }
}
