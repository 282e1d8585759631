//! The shutdown verdict at the goroutine level (Go targets): which application goroutines are
//! still there when the grace period runs out, why, in one line each — grouped, so that 2,000
//! identical leaked goroutines are one line.
//!
//! Flagged: every application goroutine of a judged process still alive at the end (runtime
//! goroutines never are). The reason says whether it has not moved since before the signal
//! (the classic leak: a send nobody receives), moved and blocked again after it (`main` in
//! `wg.Wait()` for the others), or is running.

use std::collections::BTreeMap;

use probe_lang::go::GStatus;

use super::ThreadJudgement;
use crate::{
    report::{Frame, Role, basename, format_ms_u64},
    stack::top_app_frame,
    tracker::GoroutineFacts,
};

/// Goroutines that look the same to a person (same process, role, state, wait reason, and
/// functions, files and lines of the stack and the creator) are one line of the report. The
/// stack and creator are hashed: a group key costs no allocation per goroutine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    pid: u32,
    role: bool,
    status: GStatusOrd,
    wait_reason: Option<String>,
    sites: u64,
}

/// `GStatus` ordered by its name (for a stable group order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GStatusOrd(String);

fn key(g: &GoroutineFacts) -> GroupKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in g.stack.iter().chain(g.created_by.as_deref()) {
        (&f.function, &f.file, f.line).hash(&mut h);
    }
    g.created_by.is_some().hash(&mut h);
    GroupKey {
        pid: g.pid,
        role: g.role == Role::Runtime,
        status: GStatusOrd(g.status.name()),
        wait_reason: g.wait_reason.as_deref().map(str::to_string),
        sites: h.finish(),
    }
}

/// One group of goroutines: indexes into the facts, in goid order.
#[derive(Clone, Debug)]
pub struct Group {
    pub members: Vec<usize>,
    pub flagged: bool,
    pub reason: Option<String>,
}

/// The goroutine-level verdict: per goroutine (in the order given), per group, summary lines.
#[derive(Clone, Debug, Default)]
pub struct GoJudged {
    pub goroutines: Vec<ThreadJudgement>,
    pub groups: Vec<Group>,
    pub summary: Vec<String>,
}

/// Group the goroutines; with `stalled_by` (the signal's name, when the verdict is
/// "stalled"), flag the application goroutines of the judged processes and say why.
pub fn judge(gs: &[GoroutineFacts], stalled_by: Option<&str>, judged_pids: &[u32]) -> GoJudged {
    let mut by_key: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, g) in gs.iter().enumerate() {
        by_key.entry(key(g)).or_default().push(i);
    }
    let mut out = GoJudged {
        goroutines: gs
            .iter()
            .map(|g| ThreadJudgement {
                role: g.role,
                ..ThreadJudgement::default()
            })
            .collect(),
        ..GoJudged::default()
    };
    for (_, mut members) in by_key {
        members.sort_by_key(|&i| gs[i].goid);
        let first = &gs[members[0]];
        let judged = first.role == Role::App && judged_pids.contains(&first.pid);
        let mut group = Group {
            members,
            flagged: false,
            reason: None,
        };
        if let (Some(sig), true) = (stalled_by, judged) {
            let longest = group.members.iter().filter_map(|&i| gs[i].waiting_ms).max();
            let reason = reason_for(first, sig, longest);
            for &i in &group.members {
                out.goroutines[i].flagged = true;
                out.goroutines[i].reason = Some(reason_for(&gs[i], sig, gs[i].waiting_ms));
            }
            group.flagged = true;
            group.reason = Some(reason);
        }
        out.groups.push(group);
    }
    // Flagged groups first, the longest waits first (where it started), then the biggest;
    // then the rest in a stable order.
    out.groups.sort_by_key(|g| {
        let longest = g.members.iter().filter_map(|&i| gs[i].waiting_ms).max();
        (
            !g.flagged,
            std::cmp::Reverse(longest),
            std::cmp::Reverse(g.members.len()),
            gs[g.members[0]].goid,
        )
    });
    for g in out.groups.iter().filter(|g| g.flagged) {
        let first = &gs[g.members[0]];
        let who = match g.members.len() {
            1 => format!("goroutine {}", first.goid),
            n => format!("{n} goroutines"),
        };
        let func = first
            .stack
            .iter()
            .find(|f| !crate::stack::is_system_frame(f))
            .or(first.stack.first())
            .and_then(|f| f.function.clone())
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        out.summary.push(format!(
            "{who}{func}: {}",
            g.reason.as_deref().unwrap_or("")
        ));
    }
    out
}

/// "created by main.main at main.go:57".
fn created_by(f: &Frame) -> String {
    let func = f.function.as_deref().unwrap_or("?");
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("created by {func} at {}:{line}", basename(file)),
        _ => format!("created by {func}"),
    }
}

/// The one-line reason for an application goroutine alive after the grace period.
fn reason_for(g: &GoroutineFacts, sig: &str, waited_ms: Option<u64>) -> String {
    let at = top_app_frame(&g.stack)
        .map(|f| format!(" at {f}"))
        .unwrap_or_default();
    let what = g
        .wait_reason
        .as_deref()
        .map(str::to_string)
        .unwrap_or_else(|| g.status.name());
    let waited = waited_ms
        .map(|ms| format!(" (≥ {})", format_ms_u64(ms)))
        .unwrap_or_default();
    let mut s = match g.status {
        GStatus::Waiting | GStatus::Syscall if g.since_before_signal => {
            format!("blocked in {what}{at} since before {sig}{waited}")
        }
        GStatus::Waiting | GStatus::Syscall if g.unchanged_since_signal => {
            format!("blocked in {what}{at} since {sig}{waited}")
        }
        GStatus::Waiting | GStatus::Syscall if g.seen_at_signal => {
            format!("saw {sig}, then blocked in {what}{at}")
        }
        GStatus::Waiting | GStatus::Syscall => format!("blocked in {what}{at} (since after {sig})"),
        _ => format!("{} after {sig}{at}", g.status.name()),
    };
    if let Some(w) = &g.wait {
        s.push_str(&format!("; {}", w.describe()));
    }
    if let Some(c) = &g.created_by {
        s.push_str(&format!("; {}", created_by(c)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ChanInfo, GoWait, WaitingSince};

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            ..Frame::unknown(0x40_0000)
        }
    }

    fn goroutine(
        goid: u64,
        status: GStatus,
        reason: &str,
        func: &str,
        line: u32,
    ) -> GoroutineFacts {
        GoroutineFacts {
            pid: 1,
            goid,
            status,
            wait_reason: Some(reason.into()),
            waiting_ms: Some(4000),
            waiting_since: Some(WaitingSince::Attach),
            since_before_signal: true,
            unchanged_since_signal: true,
            seen_at_signal: true,
            thread: None,
            stack: vec![
                frame("runtime.gopark", "/go/src/runtime/proc.go", 398),
                frame("runtime.chansend1", "/go/src/runtime/chan.go", 145),
                frame(func, "/src/app/main.go", line),
            ]
            .into(),
            created_by: Some(frame("main.main", "/src/app/main.go", 57).into()),
            wait: Some(GoWait::Chan(ChanInfo {
                addr: 0xc000_0100,
                cap: 0,
                len: 0,
                closed: false,
                senders: 2000,
                receivers: 0,
                op: "send",
                cases: 1,
            })),
            role: Role::App,
        }
    }

    #[test]
    fn identical_leaks_are_one_flagged_group_with_the_blocking_line() {
        let mut gs: Vec<GoroutineFacts> = (10..2010)
            .map(|id| goroutine(id, GStatus::Waiting, "chan send", "main.submit", 31))
            .collect();
        let mut gc = goroutine(
            2,
            GStatus::Waiting,
            "GC worker (idle)",
            "runtime.gcBgMarkWorker",
            1,
        );
        gc.role = Role::Runtime;
        gs.push(gc);
        let j = judge(&gs, Some("SIGTERM"), &[1]);
        assert_eq!(j.groups.len(), 2);
        let g = &j.groups[0];
        assert!(g.flagged);
        assert_eq!(g.members.len(), 2000);
        assert_eq!(
            j.summary,
            [
                "2000 goroutines (main.submit): blocked in chan send at main.submit (main.go:31) since before SIGTERM (≥ 4s); unbuffered chan 0xc0000100: no goroutine receives from it; created by main.main at main.go:57"
            ]
        );
        let runtime = j.groups.iter().find(|g| !g.flagged).unwrap();
        assert_eq!(
            runtime.members,
            [2000],
            "the GC worker is its own, unflagged group"
        );
        assert!(!j.goroutines[2000].flagged);
        assert_eq!(j.goroutines[2000].role, Role::Runtime);
    }

    #[test]
    fn main_blocked_after_the_signal_and_running_goroutines() {
        let mut main = goroutine(1, GStatus::Waiting, "sync.WaitGroup.Wait", "main.main", 70);
        main.since_before_signal = false;
        main.unchanged_since_signal = false;
        main.wait = None;
        main.created_by = None;
        let mut spin = goroutine(8, GStatus::Running, "", "main.spin", 12);
        spin.wait_reason = None;
        spin.wait = None;
        let j = judge(&[main, spin], Some("SIGTERM"), &[1]);
        let reasons: Vec<&str> = j
            .goroutines
            .iter()
            .map(|g| g.reason.as_deref().unwrap())
            .collect();
        assert_eq!(
            reasons[0],
            "saw SIGTERM, then blocked in sync.WaitGroup.Wait at main.main (main.go:70)"
        );
        assert!(
            reasons[1].starts_with("running after SIGTERM at main.spin (main.go:12)"),
            "{}",
            reasons[1]
        );
    }

    #[test]
    fn nothing_is_flagged_without_a_stall_or_outside_the_judged_processes() {
        let gs = [goroutine(
            7,
            GStatus::Waiting,
            "chan send",
            "main.worker",
            31,
        )];
        let j = judge(&gs, None, &[1]);
        assert!(!j.goroutines[0].flagged && j.summary.is_empty());
        assert_eq!(j.groups.len(), 1);
        let j = judge(&gs, Some("SIGTERM"), &[2]);
        assert!(!j.goroutines[0].flagged);
    }
}
