//! A Markdown summary for a CI job page (`--summary FILE`, and appended to
//! `$GITHUB_STEP_SUMMARY` under GitHub Actions): the verdict, the target, the shutdown signal
//! and its timing, a table of the flagged threads, and each flagged thread's top frames in a
//! collapsible `<details>` block. GitHub-flavoured Markdown (tables, inline HTML).

use std::fmt::Write as _;

use super::frame_listing;
use crate::report::{Report, ThreadReport, Verdict, format_ms};

/// Frames shown per flagged thread.
const TOP_FRAMES: usize = 12;

/// Text for inline Markdown, including inside a table cell: HTML-significant characters as
/// entities (GitHub renders inline HTML: `Vec<u8>` would vanish), Markdown punctuation that
/// could start emphasis, code or links backslash-escaped, `|` escaped for tables, newlines
/// folded into spaces.
pub fn escape_inline(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '|' => o.push_str("\\|"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                o.push('\\');
                o.push(c);
            }
            '\r' | '\n' => o.push(' '),
            c if c.is_control() => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// Text inside an HTML element (`<summary>`): entities only.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\r', '\n'], " ")
}

fn verdict_line(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "✅ **clean**",
        Verdict::Stalled => "❌ **stalled**",
        Verdict::Observed => "ℹ️ **observed** (no shutdown signal seen)",
    }
}

/// A fence longer than any run of backticks in `body`.
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn wait_cell(t: &ThreadReport) -> String {
    t.wait.as_ref().map(|w| w.describe()).unwrap_or_default()
}

fn for_cell(t: &ThreadReport) -> String {
    match t.blocked_ms {
        Some(ms) => format_ms(ms as f64),
        None => t.state.as_str().to_string(),
    }
}

/// The summary document.
pub fn summary(r: &Report) -> String {
    let mut o = String::new();
    let t = &r.target;
    let _ = writeln!(
        o,
        "### stallprobe: {} — {}\n",
        match r.verdict {
            Verdict::Clean => "clean",
            Verdict::Stalled => "stalled",
            Verdict::Observed => "observed",
        },
        escape_inline(&t.comm)
    );
    let _ = writeln!(o, "**Verdict:** {}  ", verdict_line(r.verdict));
    let _ = writeln!(
        o,
        "**Target:** pid {} {} ({}), runtime {}{}  ",
        t.pid,
        escape_inline(&t.comm),
        escape_inline(&t.exe),
        t.runtime.as_str(),
        match (t.exited, t.exit_code, &t.killed_by) {
            (true, Some(c), _) => format!(", exited with code {c}"),
            (true, None, Some(s)) => format!(", killed by {}", escape_inline(s)),
            (true, None, None) => ", exited".to_string(),
            (false, _, _) => ", still running at the end".to_string(),
        }
    );
    match &r.shutdown {
        Some(sd) => {
            let outcome = sd.outcome();
            let _ = writeln!(
                o,
                "**Shutdown:** {} from pid {} ({}) at +{}, grace {}: {}{}  ",
                escape_inline(&sd.signal),
                sd.sender_pid,
                escape_inline(&sd.sender_comm),
                format_ms(sd.at_ms.max(0) as f64),
                format_ms(sd.grace_ms as f64),
                outcome,
                if sd.ignored {
                    " (the signal was ignored or blocked)"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(o, "**Shutdown:** no shutdown signal was seen  ");
        }
    }
    let _ = writeln!(
        o,
        "**Watched:** {}, threshold {}, {} threads\n",
        format_ms(r.session.watched_ms as f64),
        format_ms(r.session.threshold_ms),
        r.threads.len()
    );
    for line in &r.summary {
        let _ = writeln!(o, "- {}", escape_inline(line));
    }
    // Wait-for cycles, unless the summary already states them.
    for d in super::unstated_deadlocks(r) {
        let _ = writeln!(o, "- deadlock: {}", escape_inline(&d));
    }
    if !r.summary.is_empty() || !r.deadlocks.is_empty() {
        o.push('\n');
    }

    let flagged: Vec<&ThreadReport> = r.flagged().collect();
    if flagged.is_empty() {
        let _ = writeln!(o, "No thread flagged.\n");
    } else {
        let _ = writeln!(o, "#### Flagged threads\n");
        let _ = writeln!(o, "| tid | name | call | waits on | for | reason |");
        let _ = writeln!(o, "|---:|---|---|---|---:|---|");
        for th in &flagged {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                th.tid,
                escape_inline(&th.name),
                escape_inline(th.syscall.as_deref().unwrap_or(th.state.as_str())),
                escape_inline(&wait_cell(th)),
                for_cell(th),
                escape_inline(th.reason.as_deref().unwrap_or(""))
            );
        }
        o.push('\n');
        for th in &flagged {
            let stack = super::profile_stack(th);
            let at = crate::stack::top_app_frame(stack)
                .map(|f| format!(" at {f}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "<details><summary>tid {} <b>{}</b>{}</summary>\n",
                th.tid,
                escape_html(&th.name),
                escape_html(&at)
            );
            let mut body = String::new();
            if stack.is_empty() {
                body.push_str("user stack: unavailable\n");
            } else {
                for (i, f) in stack.iter().enumerate().take(TOP_FRAMES) {
                    let _ = writeln!(body, "{}", frame_listing(i, f));
                }
                if stack.len() > TOP_FRAMES {
                    let _ = writeln!(body, "… {} more frames", stack.len() - TOP_FRAMES);
                }
            }
            if !th.kernel_stack.is_empty() {
                let k: Vec<&str> = th
                    .kernel_stack
                    .iter()
                    .map(|f| f.function.as_str())
                    .collect();
                let _ = writeln!(body, "kernel: {}", k.join(" ← "));
            }
            let fence = fence_for(&body);
            let _ = writeln!(o, "{fence}\n{body}{fence}\n\n</details>\n");
        }
    }
    goroutine_groups(&mut o, r);
    if r.dropped_events > 0 {
        let _ = writeln!(
            o,
            "⚠️ the kernel side dropped {} events: the report is incomplete.\n",
            r.dropped_events
        );
    }
    for n in &r.notes {
        let _ = writeln!(o, "> note: {}", escape_inline(n));
    }
    if !r.notes.is_empty() {
        o.push('\n');
    }
    o
}

/// Flagged goroutine groups of Go targets: a table, then each group's stack.
fn goroutine_groups(o: &mut String, r: &Report) {
    let groups: Vec<_> = r.flagged_groups().collect();
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(o, "#### Flagged goroutines\n");
    let _ = writeln!(o, "| goroutines | wait | for | where | reason |");
    let _ = writeln!(o, "|---:|---|---:|---|---|");
    for g in &groups {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            g.count,
            escape_inline(g.wait_reason.as_deref().unwrap_or(&g.state)),
            g.waited().unwrap_or_default(),
            escape_inline(&crate::stack::top_app_frame(&g.stack).unwrap_or_default()),
            escape_inline(g.reason.as_deref().unwrap_or(""))
        );
    }
    o.push('\n');
    for g in &groups {
        let _ = writeln!(
            o,
            "<details><summary><b>{}</b></summary>\n",
            escape_html(&g.who())
        );
        let mut body = String::new();
        for (i, f) in g.stack.iter().enumerate().take(TOP_FRAMES) {
            let _ = writeln!(body, "{}", frame_listing(i, f));
        }
        if let Some(c) = &g.created_by {
            let _ = writeln!(body, "created by {}", super::frame_where(c));
        }
        let fence = fence_for(&body);
        let _ = writeln!(o, "{fence}\n{body}{fence}\n\n</details>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil;

    #[test]
    fn table_of_flagged_threads() {
        let md = summary(&testutil::report());
        assert!(
            md.starts_with("### stallprobe: stalled — deadlock\n"),
            "{md}"
        );
        assert!(md.contains("**Verdict:** ❌ **stalled**"));
        assert!(md.contains(
            "**Shutdown:** SIGTERM from pid 99 (stallprobe) at +2s, grace 2s: still alive when the 2s grace period ran out"
        ));
        assert!(md.contains(
            "| tid | name | call | waits on | for | reason |\n|---:|---|---|---|---:|---|\n"
        ));
        assert!(md.contains(
            "| 101 | locker-a | futex | FUTEX\\_WAIT\\_PRIVATE 0x555500001120 | 4s | blocked in futex on FUTEX\\_WAIT\\_PRIVATE"
        ), "{md}");
        let rows = md.lines().filter(|l| l.starts_with("| 10")).count();
        assert_eq!(rows, 3, "{md}");
        assert!(md.contains(
            "<details><summary>tid 101 <b>locker-a</b> at take_second_lock (deadlock.c:26)</summary>\n\n```\n#0  futex_wait"
        ), "{md}");
        assert!(
            md.contains("kernel: futex_do_wait ← futex_wait ← do_syscall_64\n```\n\n</details>")
        );
        // The exited and the running thread are not in the table.
        assert!(!md.contains("helper") && !md.contains("ticker"));
    }

    #[test]
    fn deadlock_cycles_once() {
        use crate::report::{CycleObject, CycleThread, Deadlock};
        let mut r = testutil::report();
        let t = |tid, name: &str| CycleThread {
            tid,
            pid: 100,
            name: name.into(),
        };
        let o = |addr, waiter, holder| CycleObject {
            kind: "pthread_mutex".into(),
            addr,
            waiter,
            holder,
        };
        r.deadlocks = vec![Deadlock {
            threads: vec![t(101, "locker-a"), t(102, "locker-b")],
            objects: vec![o(0x10, 101, 102), o(0x20, 102, 101)],
        }];
        let d = r.deadlocks[0].describe();
        let md = summary(&r);
        assert_eq!(md.matches("locker-a (101) waits for").count(), 1, "{md}");
        assert!(md.contains("- deadlock: locker-a (101) waits for pthread\\_mutex 0x10"));
        // Already in the summary: not repeated.
        r.summary.push(format!("deadlock: {d}"));
        let md = summary(&r);
        assert_eq!(md.matches("locker-a (101) waits for").count(), 1, "{md}");
    }

    #[test]
    fn clean_summary_and_cell_escaping() {
        let md = summary(&testutil::clean_report());
        assert!(md.contains("✅ **clean**"));
        assert!(md.contains("exited 12ms after it"));
        assert!(md.contains("No thread flagged."));
        assert!(!md.contains("<details>"));

        assert_eq!(escape_inline("a|b\nc"), "a\\|b c");
        assert_eq!(
            escape_inline("Vec<u8> & *x*"),
            "Vec&lt;u8&gt; &amp; \\*x\\*"
        );
        let mut r = testutil::report();
        r.threads[1].name = "pipe|<x>".into();
        r.threads[1].stack[3].function = Some("a```b".into());
        let md = summary(&r);
        assert!(md.contains("| 101 | pipe\\|&lt;x&gt; |"));
        assert!(md.contains("<b>pipe|&lt;x&gt;</b>"));
        // The fence outgrows the backticks inside.
        assert!(md.contains("````\n#0  futex_wait"));
    }
}
