//! The shutdown verdict: after a stop signal and the grace period, which OS threads kept the
//! process alive, and why — in one line a person understands.
//!
//! Pure logic over the per-thread facts the session collected, so it is unit-tested without a
//! kernel. Exit codes follow from it: 0 clean or observed, 1 stalled.

mod goroutines;

use std::collections::BTreeMap;

pub use goroutines::GoJudged;

use crate::{
    events::SignalInfo,
    report::{
        Deadlock, Role, Runtime, ShutdownReport, ThreadState, Verdict, Wait, format_ms,
        format_ms_u64,
    },
    runtime, signals,
    stack::top_app_frame,
    tracker::{GoroutineFacts, ThreadFacts},
};

/// How the watch ended (decides what the verdict can say).
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

/// Exit code when at least one thread is flagged / the process stalled.
pub const EXIT_STALLED: i32 = 1;

pub struct Context<'a> {
    pub shutdown: Option<&'a SignalInfo>,
    pub grace_ms: u64,
    /// When the last watched process exited (None: some are alive).
    pub process_exit_ns: Option<u64>,
    pub attach_ns: u64,
    pub now_ns: u64,
    pub end: EndReason,
    /// Per pid: the detected runtime.
    pub runtimes: &'a BTreeMap<u32, Runtime>,
    /// The processes the shutdown signal reached: only their threads are judged.
    pub judged_pids: &'a [u32],
}

/// The verdict, and per thread (in the order given) its role and whether it is flagged.
pub struct Judged {
    pub verdict: Verdict,
    pub shutdown: Option<ShutdownReport>,
    pub summary: Vec<String>,
    pub threads: Vec<ThreadJudgement>,
    /// The goroutines of Go targets, judged and grouped.
    pub go: GoJudged,
}

/// What the verdict says about one thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadJudgement {
    pub role: Role,
    /// This thread kept the process from exiting.
    pub flagged: bool,
    /// Why it was flagged (or why not, for a runtime's own threads), in one line.
    pub reason: Option<String>,
}

pub fn exit_code(v: Verdict) -> i32 {
    match v {
        Verdict::Stalled => EXIT_STALLED,
        Verdict::Clean | Verdict::Observed => 0,
    }
}

/// A thread counts as spinning when it used at least this share of a CPU after the signal.
const SPIN_SHARE: f64 = 0.5;

/// Classify roles, flag threads (and goroutines) and decide the verdict.
pub fn judge(
    threads: &[ThreadFacts],
    gs: &[GoroutineFacts],
    ctx: &Context<'_>,
    deadlocks: &[Deadlock],
) -> Judged {
    let quiet_go = || goroutines::judge(gs, None, ctx.judged_pids);
    let deadlock_lines: Vec<String> = deadlocks
        .iter()
        .map(|d| format!("deadlock: {}", d.describe()))
        .collect();
    let in_cycle = |tid: u32| {
        deadlocks
            .iter()
            .find(|d| d.threads.iter().any(|t| t.tid == tid))
    };
    // Roles first: they matter with or without a shutdown signal.
    let mut judged: Vec<ThreadJudgement> = threads
        .iter()
        .map(|t| {
            let rt = ctx.runtimes.get(&t.pid).copied().unwrap_or_default();
            match runtime::classify(rt, &t.name, t.syscall.as_deref(), &t.stack) {
                Some(rule) if t.state != ThreadState::Exited => ThreadJudgement {
                    role: Role::Runtime,
                    flagged: false,
                    reason: Some(format!(
                        "{} (expected; not an application stall)",
                        rule.what
                    )),
                },
                _ => ThreadJudgement::default(),
            }
        })
        .collect();

    let Some(sig) = ctx.shutdown else {
        let mut summary =
            vec!["no shutdown signal seen: nothing to judge (exit code 0)".to_string()];
        summary.extend(deadlock_lines);
        return Judged {
            verdict: Verdict::Observed,
            shutdown: None,
            summary,
            threads: judged,
            go: quiet_go(),
        };
    };
    let sig_name = signals::name(sig.sig);
    let exited_after_ms = ctx
        .process_exit_ns
        .map(|e| crate::clock::diff_ms(e, sig.ts_ns));
    let exited_in_grace = exited_after_ms.is_some_and(|ms| ms <= ctx.grace_ms as i64);
    let shutdown = ShutdownReport {
        signal: sig_name.clone(),
        sender_pid: sig.sender_tgid,
        sender_comm: sig.sender_comm.clone(),
        grace_ms: ctx.grace_ms,
        process_exited: ctx.process_exit_ns.is_some(),
        exited_after_ms,
        at_ms: crate::clock::diff_ms(sig.ts_ns, ctx.attach_ns),
        ignored: sig.result == 1,
    };

    if exited_in_grace {
        let ms = exited_after_ms.unwrap_or(0);
        return Judged {
            verdict: Verdict::Clean,
            shutdown: Some(shutdown),
            summary: vec![format!(
                "clean: exited {} after {sig_name} (grace {})",
                fmt_ms(ms),
                format_ms_u64(ctx.grace_ms)
            )],
            threads: judged,
            go: quiet_go(),
        };
    }
    if ctx.process_exit_ns.is_none() && ctx.end != EndReason::GraceExpired {
        // Stopped watching before the grace period ran out (Ctrl-C, --duration): no verdict.
        return Judged {
            verdict: Verdict::Observed,
            shutdown: Some(shutdown),
            summary: vec![format!(
                "{sig_name} seen, but the watch ended before the grace period ({}) expired: no verdict",
                format_ms_u64(ctx.grace_ms)
            )],
            threads: judged,
            go: quiet_go(),
        };
    }

    let alive_for = ctx.now_ns.saturating_sub(sig.ts_ns) / 1_000_000;
    let mut summary = Vec::new();
    if let Some(ms) = exited_after_ms {
        summary.push(format!(
            "stalled: exited only {} after {sig_name}, past the grace period of {}",
            fmt_ms(ms),
            format_ms_u64(ctx.grace_ms)
        ));
    } else {
        summary.push(format!(
            "stalled: still alive {} after {sig_name} (from pid {} {}), grace {}",
            format_ms_u64(alive_for),
            sig.sender_tgid,
            sig.sender_comm,
            format_ms_u64(ctx.grace_ms)
        ));
    }
    if shutdown.ignored {
        summary.push(format!("{sig_name} is ignored by the process (SIG_IGN)"));
    }

    let names: BTreeMap<u32, String> = threads.iter().map(|t| (t.tid, t.name.clone())).collect();
    let mut flagged = 0;
    let mut runtime_idle = 0;
    for (t, j) in threads.iter().zip(judged.iter_mut()) {
        if t.state == ThreadState::Exited || !ctx.judged_pids.contains(&t.pid) {
            continue;
        }
        if j.role == Role::Runtime {
            runtime_idle += 1;
            continue;
        }
        let mut reason = reason_for(t, &sig_name, t.runnable_share, alive_for, &names);
        if let Some(d) = in_cycle(t.tid) {
            reason = format!("deadlocked ({} threads): {reason}", d.threads.len());
        }
        j.flagged = true;
        flagged += 1;
        summary.push(format!("tid {} ({}): {}", t.tid, t.name, reason));
        j.reason = Some(reason);
    }
    summary.extend(deadlock_lines);
    let go = goroutines::judge(gs, Some(&sig_name), ctx.judged_pids);
    let go_flagged = go.groups.iter().filter(|g| g.flagged).count();
    summary.extend(go.summary.iter().cloned());
    if flagged == 0 && runtime_idle > 0 && go_flagged == 0 {
        let rt = threads
            .iter()
            .find_map(|t| ctx.runtimes.get(&t.pid))
            .copied()
            .unwrap_or_default();
        summary.push(match rt {
            Runtime::Go => format!(
                "all {runtime_idle} live OS threads are idle Go runtime workers (parked Ms, netpoller): \
                 the stall is at the goroutine level, which OS threads do not show. Get goroutine \
                 stacks with `kill -QUIT <pid>` (GOTRACEBACK=all) or /debug/pprof/goroutine?debug=2"
            ),
            _ => format!(
                "all {runtime_idle} live threads are the {} runtime's own idle threads: the stall is \
                 inside the runtime's scheduler (tasks, not threads)",
                rt.as_str()
            ),
        });
    }
    Judged {
        verdict: Verdict::Stalled,
        shutdown: Some(shutdown),
        summary,
        threads: judged,
        go,
    }
}

/// A signed ms count (negative: before the signal) as a duration.
fn fmt_ms(ms: i64) -> String {
    format_ms(ms.max(0) as f64)
}

/// Whether the thread waits inside pthread_join (or its timed variants).
fn in_join(t: &ThreadFacts) -> bool {
    t.stack.iter().any(|f| {
        f.function.as_deref().is_some_and(|n| {
            n.contains("pthread_join") || n.contains("clockjoin") || n.contains("timedjoin")
        })
    })
}

/// The one-line reason for a thread that is alive past the grace period.
fn reason_for(
    t: &ThreadFacts,
    sig: &str,
    cpu_share: f64,
    since_signal_ms: u64,
    names: &BTreeMap<u32, String>,
) -> String {
    let at = top_app_frame(&t.stack)
        .map(|f| format!(" at {f}"))
        .unwrap_or_default();
    let what = match (&t.syscall, &t.wait) {
        (Some(sc), Some(w)) => format!("{sc} on {}", w.describe()),
        (Some(sc), None) => sc.clone(),
        _ => String::new(),
    };
    let blocked_ms = t.blocked_ms.unwrap_or(0);
    let dur = fmt_ms(blocked_ms as i64);
    // A join: the futex word is the joined thread's tid.
    let joining = match &t.wait {
        Some(Wait::Futex {
            value: Some(tid), ..
        }) if in_join(t) && *tid != 0 => Some(format!(
            "joining thread {tid}{}, which has not exited",
            names
                .get(tid)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        )),
        _ => None,
    };
    let same_wait_as_before = t.at_signal.as_ref().is_some_and(|a| {
        a.state == ThreadState::Blocked && a.syscall == t.syscall && a.wait == t.wait
    });
    match t.state {
        ThreadState::Running => {
            let at = t
                .spin_samples
                .iter()
                .find_map(|s| top_app_frame(s))
                .map(|f| format!(" at {f}"))
                .unwrap_or(at);
            if cpu_share >= SPIN_SHARE {
                format!(
                    "spinning: runnable {:.0}% of the time since {sig}, never blocking{at}",
                    cpu_share * 100.0
                )
            } else {
                format!("running (not blocked) and still alive after {sig}{at}")
            }
        }
        ThreadState::Blocked
            if t.woke_after_signal > 0 && joining.is_none() && same_wait_as_before =>
        {
            format!(
                "woke {} time{} after {sig} but went back to waiting: {what} for {dur}{at} \
             (other work keeps it from acting on the stop request)",
                t.woke_after_signal,
                if t.woke_after_signal == 1 { "" } else { "s" }
            )
        }
        ThreadState::Blocked if t.woke_after_signal > 0 => match joining {
            Some(j) => format!("saw {sig}, then blocked {j}: {what}{at}"),
            None => format!("woke after {sig}, then blocked in {what} for {dur}{at}"),
        },
        ThreadState::Blocked => {
            let when = if blocked_ms >= since_signal_ms {
                format!("since before {sig} ({dur})")
            } else {
                format!("for {dur} (since after {sig})")
            };
            match joining {
                Some(j) => format!("blocked {j}, {when}: {what}{at}"),
                None => format!("blocked in {what} {when} and never woke up{at}"),
            }
        }
        ThreadState::Sleeping => {
            if what.is_empty() {
                format!("asleep (not in a syscall) for {dur}{at}")
            } else {
                format!("asleep in {what} for {dur}{at} (a call outside the probed set)")
            }
        }
        ThreadState::Exited => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Frame;

    /// Judge with the runnable shares of `c` (per tid) and no deadlocks.
    fn judge_no_locks(ts: &mut [ThreadFacts], c: &(Context<'_>, &BTreeMap<u32, f64>)) -> Judged {
        for t in ts.iter_mut() {
            t.runnable_share = c.1.get(&t.tid).copied().unwrap_or(0.0);
        }
        judge(ts, &[], &c.0, &[])
    }

    fn thread(tid: u32, state: ThreadState) -> ThreadFacts {
        ThreadFacts::new(1, tid, format!("t{tid}"), state)
    }

    fn sig() -> SignalInfo {
        SignalInfo {
            tid: 1,
            tgid: 1,
            ts_ns: 10_000_000_000,
            sig: 15,
            code: 0,
            result: 0,
            group: true,
            sender_tid: 9,
            sender_tgid: 9,
            sender_comm: "kill".into(),
        }
    }

    fn ctx<'a>(
        s: Option<&'a SignalInfo>,
        exit: Option<u64>,
        end: EndReason,
        shares: &'a BTreeMap<u32, f64>,
        rts: &'a BTreeMap<u32, Runtime>,
    ) -> (Context<'a>, &'a BTreeMap<u32, f64>) {
        let c = Context {
            shutdown: s,
            grace_ms: 2000,
            process_exit_ns: exit,
            attach_ns: 0,
            now_ns: 12_500_000_000,
            end,
            runtimes: rts,
            judged_pids: &[1],
        };
        (c, shares)
    }

    #[test]
    fn no_signal_is_observed_and_flags_nothing() {
        let mut ts = vec![thread(1, ThreadState::Blocked)];
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(&mut ts, &ctx(None, None, EndReason::Duration, &a, &b));
        assert_eq!(j.verdict, Verdict::Observed);
        assert!(!j.threads[0].flagged);
        assert_eq!(exit_code(j.verdict), 0);
    }

    #[test]
    fn exit_within_grace_is_clean() {
        let mut ts = vec![thread(1, ThreadState::Exited)];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(
                Some(&s),
                Some(10_300_000_000),
                EndReason::TargetExited,
                &a,
                &b,
            ),
        );
        assert_eq!(j.verdict, Verdict::Clean);
        assert_eq!(j.shutdown.unwrap().exited_after_ms, Some(300));
    }

    #[test]
    fn blocked_thread_is_flagged_with_reason() {
        let mut t = thread(2, ThreadState::Blocked);
        t.syscall = Some("futex".into());
        t.wait = Some(Wait::futex(
            0x1000,
            "FUTEX_WAIT_PRIVATE".into(),
            None,
            Some(2),
        ));
        t.blocked_ms = Some(4500);
        t.stack = vec![Frame {
            function: Some("lock_b".into()),
            file: Some("/src/deadlock.c".into()),
            line: Some(23),
            ..Frame::unknown(1)
        }];
        let mut ts = vec![t, thread(3, ThreadState::Exited)];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert_eq!(exit_code(j.verdict), 1);
        assert!(j.threads[0].flagged);
        let r = j.threads[0].reason.as_deref().unwrap();
        assert!(r.contains("never woke up"), "{r}");
        assert!(r.contains("lock_b (deadlock.c:23)"), "{r}");
        assert!(!j.threads[1].flagged);
    }

    #[test]
    fn woken_and_waiting_again_is_failure_two() {
        let mut t = thread(2, ThreadState::Blocked);
        t.syscall = Some("epoll_wait".into());
        t.woke_after_signal = 7;
        t.at_signal = Some(crate::report::AtSignal {
            state: ThreadState::Blocked,
            syscall: Some("epoll_wait".into()),
            wait: None,
        });
        let mut ts = vec![t];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        let r = j.threads[0].reason.as_deref().unwrap();
        assert!(r.starts_with("woke 7 times"), "{r}");
    }

    #[test]
    fn woke_then_joining_a_thread_that_never_exits() {
        let mut main = thread(1, ThreadState::Blocked);
        main.syscall = Some("futex".into());
        main.woke_after_signal = 2;
        main.wait = Some(Wait::futex(
            0x7f00,
            "FUTEX_WAIT_BITSET".into(),
            None,
            Some(5),
        ));
        main.stack = vec![
            Frame {
                function: Some("__pthread_clockjoin_ex".into()),
                module: Some("/lib/x86_64-linux-gnu/libc.so.6".into()),
                ..Frame::unknown(1)
            },
            Frame {
                function: Some("shut_down".into()),
                ..Frame::unknown(2)
            },
        ];
        main.at_signal = Some(crate::report::AtSignal {
            state: ThreadState::Blocked,
            syscall: Some("epoll_wait".into()),
            wait: None,
        });
        let mut w = thread(5, ThreadState::Blocked);
        w.name = "worker-2".into();
        let mut ts = vec![main, w];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        let r = j.threads[0].reason.as_deref().unwrap();
        assert!(
            r.starts_with("saw SIGTERM, then blocked joining thread 5 (worker-2)"),
            "{r}"
        );
        assert!(r.contains("at shut_down"), "{r}");
    }

    #[test]
    fn only_processes_the_signal_reached_are_judged() {
        let mut bystander = thread(7, ThreadState::Blocked);
        bystander.pid = 2; // another process in the same cgroup, not signalled
        let mut ts = vec![thread(2, ThreadState::Blocked), bystander];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        assert!(j.threads[0].flagged);
        assert!(!j.threads[1].flagged, "not signalled, not judged");
    }

    #[test]
    fn spinning_thread() {
        let mut ts = vec![thread(2, ThreadState::Running)];
        let s = sig();
        let a = BTreeMap::from([(2, 0.97)]);
        let b = BTreeMap::new();
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        assert!(
            j.threads[0]
                .reason
                .as_deref()
                .unwrap()
                .starts_with("spinning")
        );
    }

    #[test]
    fn go_runtime_threads_are_not_blamed() {
        let mut t = thread(2, ThreadState::Blocked);
        t.syscall = Some("futex".into());
        t.stack = vec![Frame {
            function: Some("runtime.futexsleep".into()),
            ..Frame::unknown(1)
        }];
        let mut ts = vec![t];
        let s = sig();
        let a = BTreeMap::new();
        let b = BTreeMap::from([(1, Runtime::Go)]);
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::GraceExpired, &a, &b),
        );
        assert_eq!(j.verdict, Verdict::Stalled);
        assert!(!j.threads[0].flagged);
        assert_eq!(j.threads[0].role, Role::Runtime);
        assert!(j.summary.iter().any(|l| l.contains("goroutine level")));
    }

    #[test]
    fn watch_ended_before_grace_gives_no_verdict() {
        let mut ts = vec![thread(2, ThreadState::Blocked)];
        let s = sig();
        let (a, b) = (BTreeMap::new(), BTreeMap::new());
        let j = judge_no_locks(
            &mut ts,
            &ctx(Some(&s), None, EndReason::Interrupted, &a, &b),
        );
        assert_eq!(j.verdict, Verdict::Observed);
        assert!(!j.threads[0].flagged);
    }
}
