//! The report for people: aligned text, colour on a terminal.

use std::fmt::Write as _;

use super::style::{Style, pad, trunc};
use crate::report::{
    CallSummary, Frame, GoroutineGroup, Report, Role, ThreadReport, ThreadState, Verdict, basename,
    format_ms,
};

/// Goroutine groups in the table; stacks for this many flagged groups.
const GROUP_ROWS: usize = 60;
const GROUP_STACKS: usize = 20;

/// "main.submit (pool_gone.go:20)": where a group waits, in the application; for the
/// runtime's own goroutines, what they are (their start function).
fn group_site(g: &GoroutineGroup) -> String {
    if g.role == Role::Runtime
        && let Some(f) = g.stack.last()
    {
        return f.short();
    }
    crate::stack::top_app_frame(&g.stack).unwrap_or_default()
}

/// GOROUTINES: the groups (flagged first), then the stacks of the flagged groups.
fn goroutines(o: &mut String, r: &Report, st: Style) {
    let Some(total) = r.goroutines_total else {
        return;
    };
    let version = r
        .target
        .go_version
        .as_deref()
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "\n{}  {total} goroutines in {} groups{version}",
        st.bold("GOROUTINES"),
        r.goroutine_groups.len()
    );
    let _ = writeln!(
        o,
        "  {} {} {} {} WHERE",
        pad("COUNT", 7),
        pad("STATE", 9),
        pad("WAIT", 24),
        pad("FOR", 9),
    );
    for g in r.goroutine_groups.iter().take(GROUP_ROWS) {
        let mark = if g.flagged {
            st.red("  ⚑ flagged")
        } else if g.role == Role::Runtime {
            st.dim("  runtime")
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  {} {} {} {} {}{}",
            pad(&g.count.to_string(), 7),
            pad(&g.state, 9),
            pad(&trunc(g.wait_reason.as_deref().unwrap_or(""), 24), 24),
            pad(&g.waited().unwrap_or_default(), 9),
            group_site(g),
            mark
        );
    }
    if r.goroutine_groups.len() > GROUP_ROWS {
        let _ = writeln!(
            o,
            "  … {} more groups (see --format json)",
            r.goroutine_groups.len() - GROUP_ROWS
        );
    }
    for g in r.flagged_groups().take(GROUP_STACKS) {
        let goids: Vec<String> = g.goids.iter().map(u64::to_string).collect();
        let more = if g.count as usize > g.goids.len() {
            ", …"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "{} {} — {}{} [goid {}{more}]",
            st.red("●"),
            st.bold(&g.who()),
            g.wait_reason.as_deref().unwrap_or(&g.state),
            g.waited().map(|w| format!(", {w}")).unwrap_or_default(),
            goids.join(", ")
        );
        if let Some(reason) = &g.reason {
            let _ = writeln!(o, "    {} {reason}", st.dim("why:"));
        }
        for (i, f) in g.stack.iter().enumerate().take(40) {
            let _ = writeln!(o, "{}", frame_line(i, f, st));
        }
        if let Some(c) = &g.created_by {
            let _ = writeln!(o, "    created by {}", c.short());
        }
    }
}

fn wait_text(t: &ThreadReport) -> String {
    match (&t.wait, &t.syscall) {
        (Some(w), _) => w.describe(),
        (None, Some(_)) => String::new(),
        _ => String::new(),
    }
}

fn frame_line(i: usize, f: &Frame, st: Style) -> String {
    let func = f
        .function
        .clone()
        .unwrap_or_else(|| format!("{:#x}", f.addr));
    let loc = match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{}:{line}", basename(file)),
        (Some(file), None) => basename(file).to_string(),
        _ => String::new(),
    };
    // A Python or Java frame says so where a native frame names its module.
    let module = match (f.lang, f.module.as_deref()) {
        (Some(l), Some(m)) => format!("[{}] {}", l.as_str(), basename(m)),
        (Some(l), None) => format!("[{}]", l.as_str()),
        (None, m) => m.map(basename).unwrap_or("?").to_string(),
    };
    let inl = if f.inlined { " (inlined)" } else { "" };
    format!(
        "      {} {}  {}  {}{}",
        st.dim(&format!("#{i:<2}")),
        pad(&trunc(&func, 48), 48),
        pad(&loc, 28),
        st.dim(&module),
        st.dim(inl)
    )
}

/// The report for people.
pub fn text(r: &Report, st: Style) -> String {
    let mut o = String::new();
    let t = &r.target;
    let _ = writeln!(
        o,
        "{} pid {} {} ({}){} · runtime {} · watched {} · threshold {}",
        st.bold("stallprobe"),
        t.pid,
        st.bold(&t.comm),
        t.exe,
        if t.exited { ", exited" } else { "" },
        t.runtime.as_str(),
        format_ms(r.session.watched_ms as f64),
        format_ms(r.session.threshold_ms)
    );
    for c in &r.children {
        let _ = writeln!(
            o,
            "  child pid {} {} ({}){}",
            c.pid,
            c.comm,
            c.exe,
            if c.exited { ", exited" } else { "" }
        );
    }
    let verdict = match r.verdict {
        Verdict::Clean => st.green("clean"),
        Verdict::Stalled => st.red("stalled"),
        Verdict::Observed => st.bold("observed"),
    };
    let _ = writeln!(o, "verdict: {verdict}");
    for line in &r.summary {
        let _ = writeln!(o, "  {line}");
    }

    if !r.deadlocks.is_empty() {
        let _ = writeln!(o, "\n{}", st.red("DEADLOCKS"));
        for d in &r.deadlocks {
            let _ = writeln!(o, "  {}", d.describe());
        }
    }

    // Thread table.
    let _ = writeln!(o, "\n{}", st.bold("THREADS"));
    let _ = writeln!(
        o,
        "  {} {} {} {} {} FOR",
        pad("TID", 8),
        pad("NAME", 16),
        pad("STATE", 9),
        pad("CALL", 14),
        pad("WAITS ON", 44),
    );
    let mut order: Vec<&ThreadReport> = r.threads.iter().collect();
    order.sort_by_key(|t| {
        (
            !t.flagged,
            t.state != ThreadState::Blocked,
            t.state == ThreadState::Exited,
            std::cmp::Reverse(t.blocked_ms.unwrap_or(0)),
            t.tid,
        )
    });
    let max_rows = 200;
    for t in order.iter().take(max_rows) {
        let state = match t.state {
            ThreadState::Blocked => st.yellow("blocked"),
            ThreadState::Running => st.green("running"),
            ThreadState::Sleeping => "sleeping".to_string(),
            ThreadState::Exited => st.dim("exited"),
        };
        let mark = if t.flagged {
            st.red("  ⚑ flagged")
        } else if t.role == Role::Runtime {
            st.dim("  runtime")
        } else {
            String::new()
        };
        let dur = match (t.state, t.blocked_ms, t.exited_after_ms) {
            (ThreadState::Exited, _, Some(ms)) => format!("t{:+}ms", ms),
            (_, Some(ms), _) => format_ms(ms as f64),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  {} {} {} {} {} {}{}",
            pad(&t.tid.to_string(), 8),
            pad(&trunc(&t.name, 16), 16),
            pad(&state, 9),
            pad(&t.syscall.clone().unwrap_or_default(), 14),
            pad(&trunc(&wait_text(t), 44), 44),
            dur,
            mark
        );
    }
    if order.len() > max_rows {
        let _ = writeln!(
            o,
            "  … {} more threads (see --format json)",
            order.len() - max_rows
        );
    }

    goroutines(&mut o, r, st);

    // Stacks of the threads that matter.
    let threshold = r.session.threshold_ms as u64;
    let interesting: Vec<&&ThreadReport> = order
        .iter()
        .filter(|t| {
            t.flagged
                || (t.state == ThreadState::Blocked
                    && t.role == Role::App
                    && t.blocked_ms.unwrap_or(0) >= threshold)
                || (t.state == ThreadState::Sleeping
                    && t.blocked_ms.unwrap_or(0) >= threshold
                    && t.role == Role::App)
        })
        .take(50)
        .collect();
    if !interesting.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("STACKS"));
    }
    for t in interesting {
        let head = match t.state {
            ThreadState::Running => "running".to_string(),
            _ => format!(
                "{} in {}{} for {}",
                t.state.as_str(),
                t.syscall.clone().unwrap_or_else(|| "?".into()),
                t.wait
                    .as_ref()
                    .map(|w| format!(" on {}", w.describe()))
                    .unwrap_or_default(),
                format_ms(t.blocked_ms.unwrap_or(0) as f64)
            ),
        };
        let bullet = if t.flagged {
            st.red("●")
        } else {
            st.yellow("●")
        };
        let ns = t
            .ns_tid
            .map(|n| format!(" (tid {n} in its namespace)"))
            .unwrap_or_default();
        let _ = writeln!(o, "{bullet} {} {}{ns} — {head}", t.tid, st.bold(&t.name));
        if let Some(reason) = &t.reason {
            let _ = writeln!(o, "    {} {reason}", st.dim("why:"));
        }
        if t.stack.is_empty() {
            let _ = writeln!(o, "    user stack: unavailable");
        } else {
            let _ = writeln!(o, "    user stack:");
            for (i, f) in t.stack.iter().enumerate().take(40) {
                let _ = writeln!(o, "{}", frame_line(i, f, st));
            }
        }
        if !t.kernel_stack.is_empty() {
            let k: Vec<&str> = t
                .kernel_stack
                .iter()
                .map(|f| f.function.as_str())
                .take(8)
                .collect();
            let _ = writeln!(o, "    kernel: {}", st.dim(&k.join(" ← ")));
        }
        if let Some(sample) = t
            .spin_samples
            .first()
            .filter(|_| t.state == ThreadState::Running)
        {
            let _ = writeln!(o, "    where it runs (first sample):");
            for (i, f) in sample.iter().enumerate().take(15) {
                let _ = writeln!(o, "{}", frame_line(i, f, st));
            }
        }
    }

    // Block-time statistics.
    let rows: Vec<(&ThreadReport, &String, &CallSummary)> = r
        .threads
        .iter()
        .flat_map(|t| t.blocks.iter().map(move |(c, s)| (t, c, s)))
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("BLOCK TIME BY THREAD AND CALL"));
        let _ = writeln!(
            o,
            "  {} {} {} {:>9} {:>10} {:>10} {:>10} {:>10}",
            pad("TID", 8),
            pad("NAME", 16),
            pad("CALL", 12),
            "COUNT",
            "TOTAL",
            "P50",
            "P99",
            "MAX"
        );
        for (t, c, s) in rows.iter().take(300) {
            let _ = writeln!(
                o,
                "  {} {} {} {:>9} {:>10} {:>10} {:>10} {:>10}",
                pad(&t.tid.to_string(), 8),
                pad(&trunc(&t.name, 16), 16),
                pad(c, 12),
                s.count,
                format_ms(s.total_ms),
                format_ms(s.p50_ms),
                format_ms(s.p99_ms),
                format_ms(s.max_ms)
            );
        }
    }

    if !r.slow_calls.is_empty() {
        let _ = writeln!(
            o,
            "\n{} (≥ {}) {} in all",
            st.bold("SLOW CALLS"),
            format_ms(r.session.threshold_ms),
            r.slow_calls_total
        );
        for s in r.slow_calls.iter().take(20) {
            let at = crate::stack::top_app_frame(&s.stack)
                .map(|f| format!(" at {f}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  +{:<8} tid {} {} {}{} took {}{}",
                format_ms(s.ended_at_ms as f64),
                s.tid,
                s.name,
                s.syscall,
                s.wait
                    .as_ref()
                    .map(|w| format!(" on {}", w.describe()))
                    .unwrap_or_default(),
                format_ms(s.duration_ms),
                at
            );
        }
    }

    if !r.timeline.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("TIMELINE"));
        let rel = r.shutdown.is_some();
        for e in &r.timeline {
            let t = if rel {
                if e.t_ms == 0 {
                    "t0".to_string()
                } else {
                    format!("t0{:+}ms", e.t_ms)
                }
            } else {
                format!("+{}ms", e.t_ms)
            };
            let _ = writeln!(o, "  {} {}", pad(&t, 12), e.event);
        }
    }

    let _ = writeln!(o);
    if r.dropped_events > 0 {
        let _ = writeln!(
            o,
            "{}",
            st.red(&format!(
                "dropped events: {} (slow calls {}, signals {}, thread exits {}, fork/exec {}, storage {})",
                r.dropped_events,
                r.drops.dropped_slow_calls,
                r.drops.dropped_signals,
                r.drops.dropped_thread_exits,
                r.drops.dropped_lifecycle,
                r.drops.task_storage_failures
            ))
        );
    } else {
        let _ = writeln!(o, "{}", st.dim("dropped events: 0"));
    }
    for n in &r.notes {
        let _ = writeln!(o, "{} {n}", st.dim("note:"));
    }
    o
}
