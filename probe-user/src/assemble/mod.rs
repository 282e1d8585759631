//! The report assembler: from what the tracker knows, what the inspection of the target found
//! (lock owners, fd objects, perf maps) and the verdict, build the [`Report`] — each
//! [`ThreadReport`] once, complete. Pure: no clock, no /proc, no side effect on the tracker,
//! so the golden schema test (`golden.rs`) runs it on a fixed session.

#[cfg(test)]
mod golden;
pub(crate) mod lang;

pub use lang::RuntimeView;

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    locks::{self, FutexFinding},
    report::{
        Counters, FdObject, GoroutineGroup, GoroutineReport, Report, SCHEMA, SessionInfo,
        TargetInfo, ThreadReport, TimelineEntry, Wait,
    },
    runtime,
    tracker::{GoroutineFacts, ThreadFacts, Tracker},
    verdict::{self, EndReason, GoJudged, ThreadJudgement},
};

/// Goroutines listed one by one (flagged ones first); the groups cover them all.
const MAX_GOROUTINES_LISTED: usize = 1000;
/// Goids named per group.
const GROUP_GOIDS: usize = 10;

/// What inspecting the live target found for the report (gathered by the session).
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Per thread, in the order of the facts: what its futex wait is about.
    pub futex: Vec<Option<FutexFinding>>,
    /// The objects behind the fds threads wait on, by (pid, fd).
    pub fd_objects: BTreeMap<(u32, u64), FdObject>,
    /// Processes whose perf map (JIT symbols) was read.
    pub perf_maps: BTreeSet<u32>,
    /// Processes whose perf map was there but not read, and why (a FIFO, too big, a symlink,
    /// not the process's own).
    pub skipped_perf_maps: BTreeMap<u32, String>,
    /// What language runtimes said (Python frames, a JVM's thread dump), by process.
    pub runtimes: BTreeMap<u32, RuntimeView>,
    /// How reading the runtimes went (which were read, attached to, or could not be, and why).
    pub runtime_notes: Vec<String>,
}

/// Everything the report is built from.
pub struct Inputs<'a> {
    pub tracker: &'a Tracker,
    /// [`Tracker::thread_facts`], as of `now_ns`.
    pub facts: Vec<ThreadFacts>,
    pub findings: Findings,
    /// The report's target and the other watched processes.
    pub target: TargetInfo,
    pub children: Vec<TargetInfo>,
    pub end: EndReason,
    pub now_ns: u64,
    pub counters: Counters,
    pub session: SessionInfo,
    /// Notes from the session (hook fallback, probes skipped, stacks limited ...).
    pub notes: Vec<String>,
}

pub fn report(inp: Inputs<'_>) -> Report {
    let Inputs {
        tracker,
        facts,
        findings,
        target,
        children,
        end,
        now_ns,
        counters,
        session,
        mut notes,
    } = inp;

    // Complete every wait with what was found about it.
    let mut facts = facts;
    for (i, t) in facts.iter_mut().enumerate() {
        let futex = findings.futex.get(i).and_then(Option::as_ref);
        t.wait = t.wait.take().map(|w| match locks::complete(w, futex) {
            Wait::Fd {
                fd,
                target,
                timeout_ms,
                object,
            } if t.state != crate::report::ThreadState::Exited => Wait::Fd {
                fd,
                target,
                timeout_ms,
                object: findings.fd_objects.get(&(t.pid, fd)).cloned().or(object),
            },
            w => w,
        });
    }

    // Language-level frames and locks (the GIL, Java monitors) before the wait-for graph.
    notes.extend(findings.runtime_notes.iter().cloned());
    notes.extend(lang::apply(&mut facts, &findings.runtimes));
    let deadlocks = locks::find_cycles(&facts);
    let shutdown = tracker.shutdown_signal();
    let grace_ms = tracker.config().grace_ns / 1_000_000;
    let judged_pids = tracker.judged_pids();
    let runtimes = tracker.runtimes();
    let process_exit_ns = tracker.judged_exit_ns();
    let gfacts = tracker.goroutine_facts(&facts, now_ns);
    let judged = verdict::judge(
        &facts,
        &gfacts,
        &verdict::Context {
            judged_pids: &judged_pids,
            runtimes: &runtimes,
            shutdown,
            grace_ms,
            process_exit_ns,
            attach_ns: tracker.attach_ns(),
            now_ns,
            end,
        },
        &deadlocks,
    );

    notes.extend(symbolization_notes(tracker, &facts, &findings));
    notes.extend(findings.skipped_perf_maps.iter().map(|(pid, why)| {
        format!("pid {pid}: its perf map was not read (JIT frames stay unnamed): {why}")
    }));
    notes.extend(tracker.go_notes());
    let goroutines_total = (!gfacts.is_empty()).then_some(gfacts.len() as u64);
    let (goroutines, goroutine_groups) = goroutine_reports(gfacts, &judged.go);
    if goroutines_total.is_some_and(|n| n as usize > goroutines.len()) {
        notes.push(format!(
            "{} goroutines: {} listed one by one (flagged first); the groups cover all of them",
            goroutines_total.unwrap_or(0),
            goroutines.len()
        ));
    }
    if tracker.exited_not_listed() > 0 {
        notes.push(format!(
            "{} short-lived threads exited without blocking past the threshold and are not listed (thread churn)",
            tracker.exited_not_listed()
        ));
    }
    if tracker.timeline_full() {
        notes.push(format!(
            "the timeline is cut at {} entries",
            tracker.timeline().len()
        ));
    }
    match end {
        EndReason::TargetExited if shutdown.is_none() => notes.push(
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

    let origin = shutdown.map(|s| s.ts_ns).unwrap_or(tracker.attach_ns());
    let mut timeline: Vec<TimelineEntry> = tracker
        .timeline()
        .iter()
        .map(|e| TimelineEntry {
            t_ms: crate::clock::diff_ms(e.ts_ns, origin),
            event: e.text.clone(),
            tid: e.tid,
        })
        .collect();
    timeline.sort_by_key(|e| e.t_ms);
    if shutdown.is_some() && process_exit_ns.is_none() && end == EndReason::GraceExpired {
        timeline.push(TimelineEntry {
            t_ms: grace_ms as i64,
            event: "still alive at the end of the grace period".into(),
            tid: None,
        });
    }

    let threads = facts
        .into_iter()
        .zip(judged.threads)
        .map(|(f, j)| thread_report(f, j))
        .collect();

    Report {
        schema: SCHEMA,
        target,
        children,
        verdict: judged.verdict,
        shutdown: judged.shutdown,
        summary: judged.summary,
        threads,
        goroutines,
        goroutines_total,
        goroutine_groups,
        deadlocks,
        slow_calls: tracker.slow_calls().to_vec(),
        slow_calls_total: tracker.slow_calls_total(),
        timeline,
        dropped_events: counters.dropped(),
        drops: counters,
        session,
        notes,
    }
}

/// The goroutines listed one by one (capped, flagged first) and the groups (all of them).
fn goroutine_reports(
    gs: Vec<GoroutineFacts>,
    judged: &GoJudged,
) -> (Vec<GoroutineReport>, Vec<GoroutineGroup>) {
    let groups = judged
        .groups
        .iter()
        .map(|g| {
            let first = &gs[g.members[0]];
            GoroutineGroup {
                pid: first.pid,
                count: g.members.len() as u64,
                goids: g
                    .members
                    .iter()
                    .take(GROUP_GOIDS)
                    .map(|&i| gs[i].goid)
                    .collect(),
                state: first.status.name(),
                wait_reason: first.wait_reason.as_deref().map(str::to_string),
                waiting_ms: g.members.iter().filter_map(|&i| gs[i].waiting_ms).max(),
                stack: first.stack.to_vec(),
                created_by: first.created_by.as_deref().cloned(),
                role: first.role,
                flagged: g.flagged,
                reason: g.reason.clone(),
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..gs.len()).collect();
    order.sort_by_key(|&i| (!judged.goroutines[i].flagged, gs[i].pid, gs[i].goid));
    order.truncate(MAX_GOROUTINES_LISTED);
    let mut slots: Vec<Option<GoroutineFacts>> = gs.into_iter().map(Some).collect();
    let list = order
        .into_iter()
        .filter_map(|i| {
            let g = slots[i].take()?;
            let j = &judged.goroutines[i];
            Some(GoroutineReport {
                pid: g.pid,
                goid: g.goid,
                state: g.status.name(),
                wait_reason: g.wait_reason.as_deref().map(str::to_string),
                waiting_ms: g.waiting_ms,
                waiting_since: g.waiting_since,
                thread: g.thread,
                stack: g.stack.to_vec(),
                created_by: g.created_by.as_deref().cloned(),
                wait: g.wait,
                role: j.role,
                flagged: j.flagged,
                reason: j.reason.clone(),
            })
        })
        .collect();
    (list, groups)
}

fn thread_report(f: ThreadFacts, j: ThreadJudgement) -> ThreadReport {
    ThreadReport {
        tid: f.tid,
        pid: f.pid,
        name: f.name,
        state: f.state,
        syscall: f.syscall,
        blocked_ms: f.blocked_ms,
        blocked_since: f.blocked_since,
        wait: f.wait,
        stack: f.stack,
        kernel_stack: f.kernel_stack,
        blocks: f.blocks,
        role: j.role,
        flagged: j.flagged,
        reason: j.reason,
        woke_after_signal: f.woke_after_signal,
        at_signal: f.at_signal,
        exited_after_ms: f.exited_after_ms,
        ns_tid: f.ns_tid,
        cpu_ms: f.cpu_ms,
        spin_samples: f.spin_samples,
        lang_note: f.lang_note,
        holds: f.holds,
    }
}

/// What to tell the user about frames that could not be named (JIT code without a perf map,
/// an interpreter's frames), per process.
fn symbolization_notes(
    tracker: &Tracker,
    facts: &[ThreadFacts],
    findings: &Findings,
) -> Vec<String> {
    let runtimes = tracker.runtimes();
    runtimes
        .iter()
        .filter_map(|(&pid, &rt)| {
            let unknown = facts.iter().filter(|t| t.pid == pid).any(|t| {
                t.stack.iter().any(|f| {
                    // Unknown addresses, or V8's interpreter trampoline standing in for JS.
                    f.function.is_none()
                        || f.function.as_deref() == Some("Builtins_InterpreterEntryTrampoline")
                })
            });
            // Frames named another way: a perf map, or the runtime's own view of its frames.
            let named = findings.perf_maps.contains(&pid) || findings.runtimes.contains_key(&pid);
            runtime::symbolization_hint(rt, pid, named, unknown)
        })
        .collect()
}
