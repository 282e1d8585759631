//! JUnit XML (`--junit FILE`), the test-report format every CI system reads (GitLab, Jenkins,
//! Azure, CircleCI, GitHub test-report actions).
//!
//! One `<testsuite name="stallprobe">` for the target. Each flagged thread is a failing
//! `<testcase classname="COMM" name="tid N (NAME)">` whose `<failure message="REASON">` holds
//! the reason and the symbolized user and kernel stacks. With nothing flagged there is one test
//! case, `shutdown`: passing for a clean shutdown or a watch without one, failing for a stall
//! that no single thread explains (e.g. Go goroutines stuck on channels), so that the failure
//! count always agrees with the exit code.

use std::fmt::Write as _;

use super::frame_listing;
use crate::report::{GoroutineGroup, Report, ThreadReport, Verdict};

/// Text content for XML 1.0: `&`, `<`, `>` escaped, characters XML cannot hold (control
/// characters other than tab and newlines, lone surrogates cannot occur in `str`, U+FFFE/U+FFFF)
/// replaced by U+FFFD.
pub fn escape_text(s: &str) -> String {
    escape(s, false)
}

/// An attribute value (for double quotes): as [`escape_text`], plus `"` and `'`, and tab and
/// newlines as character references so that attribute normalization keeps them.
pub fn escape_attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attr: bool) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' if attr => o.push_str("&quot;"),
            '\'' if attr => o.push_str("&apos;"),
            '\t' if attr => o.push_str("&#9;"),
            '\n' if attr => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            '\t' | '\n' => o.push(c),
            c if is_xml_char(c) => o.push(c),
            _ => o.push('\u{FFFD}'),
        }
    }
    o
}

/// The `Char` production of XML 1.0.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// A JUnit `time` attribute: seconds with ms precision (a machine format, not for people).
fn xml_seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// The failure body of a flagged thread: the reason, then its stacks.
pub fn failure_body(t: &ThreadReport) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{}", t.reason.as_deref().unwrap_or("flagged"));
    let _ = writeln!(
        b,
        "\nthread: tid {} ({}), state {}{}{}",
        t.tid,
        t.name,
        t.state.as_str(),
        t.syscall
            .as_ref()
            .map(|s| format!(", in {s}"))
            .unwrap_or_default(),
        t.wait
            .as_ref()
            .map(|w| format!(" on {}", w.describe()))
            .unwrap_or_default()
    );
    let stack = super::profile_stack(t);
    if stack.is_empty() {
        let _ = writeln!(b, "\nuser stack: unavailable");
    } else {
        let _ = writeln!(b, "\nuser stack:");
        for (i, f) in stack.iter().enumerate() {
            let _ = writeln!(b, "  {}", frame_listing(i, f));
        }
    }
    if !t.kernel_stack.is_empty() {
        let _ = writeln!(b, "\nkernel stack:");
        for k in &t.kernel_stack {
            let _ = writeln!(b, "  {}", k.function);
        }
    }
    b
}

/// The failure body of a flagged goroutine group: the reason, the goids, the stack, the
/// creator.
pub fn group_failure_body(g: &GoroutineGroup) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{}", g.reason.as_deref().unwrap_or("flagged"));
    let goids: Vec<String> = g.goids.iter().map(u64::to_string).collect();
    let _ = writeln!(
        b,
        "\n{}: state {}{}, goid {}{}",
        g.who(),
        g.state,
        g.wait_reason
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default(),
        goids.join(", "),
        if g.count as usize > g.goids.len() {
            ", …"
        } else {
            ""
        }
    );
    let _ = writeln!(b, "\ngoroutine stack:");
    for (i, f) in g.stack.iter().enumerate() {
        let _ = writeln!(b, "  {}", frame_listing(i, f));
    }
    if let Some(c) = &g.created_by {
        let _ = writeln!(b, "\ncreated by {}", super::frame_where(c));
    }
    b
}

/// The JUnit XML document for a report: one failing test case per flagged thread and per
/// flagged goroutine group.
pub fn junit(r: &Report) -> String {
    let flagged: Vec<&ThreadReport> = r.flagged().collect();
    let groups: Vec<&GoroutineGroup> = r.flagged_groups().collect();
    let stalled = r.verdict == Verdict::Stalled;
    let cases = flagged.len() + groups.len();
    let (tests, failures) = if cases == 0 {
        (1, usize::from(stalled))
    } else {
        (cases, cases)
    };
    let time = xml_seconds(r.session.watched_ms);
    let comm = escape_attr(&r.target.comm);
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"stallprobe\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">"
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"stallprobe\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\">"
    );
    o.push_str("    <properties>\n");
    let mut props: Vec<(&str, String)> = vec![
        ("verdict", verdict_str(r.verdict).into()),
        ("target.pid", r.target.pid.to_string()),
        ("target.comm", r.target.comm.clone()),
        ("target.exe", r.target.exe.clone()),
        ("target.runtime", r.target.runtime.as_str().into()),
        ("stallprobe.version", r.session.stallprobe_version.into()),
    ];
    if let Some(sd) = &r.shutdown {
        props.push(("shutdown.signal", sd.signal.clone()));
        props.push((
            "shutdown.sender",
            format!("{} ({})", sd.sender_pid, sd.sender_comm),
        ));
        props.push(("shutdown.grace_ms", sd.grace_ms.to_string()));
        props.push(("shutdown.process_exited", sd.process_exited.to_string()));
    }
    for (k, v) in props {
        let _ = writeln!(
            o,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape_attr(k),
            escape_attr(&v)
        );
    }
    o.push_str("    </properties>\n");

    if cases == 0 {
        let case_time = r
            .shutdown
            .as_ref()
            .and_then(|s| s.exited_after_ms)
            .map(|ms| xml_seconds(ms.max(0) as u64))
            .unwrap_or_else(|| "0.000".into());
        let _ = write!(
            o,
            "    <testcase classname=\"{comm}\" name=\"shutdown\" time=\"{case_time}\">"
        );
        let summary = r.summary.join("\n");
        if stalled {
            let msg = r
                .summary
                .first()
                .cloned()
                .unwrap_or_else(|| "stalled".into());
            let _ = write!(
                o,
                "\n      <failure message=\"{}\" type=\"stalled\">{}</failure>\n    ",
                escape_attr(&msg),
                escape_text(&summary)
            );
        } else if !summary.is_empty() {
            let _ = write!(
                o,
                "\n      <system-out>{}</system-out>\n    ",
                escape_text(&summary)
            );
        }
        o.push_str("</testcase>\n");
    }
    for t in &flagged {
        let name = format!("tid {} ({})", t.tid, t.name);
        let msg = t.reason.as_deref().unwrap_or("flagged");
        let _ = writeln!(
            o,
            "    <testcase classname=\"{comm}\" name=\"{}\" time=\"{}\">",
            escape_attr(&name),
            xml_seconds(t.blocked_ms.unwrap_or(0))
        );
        let _ = writeln!(
            o,
            "      <failure message=\"{}\" type=\"stalled\">{}</failure>",
            escape_attr(msg),
            escape_text(&failure_body(t))
        );
        o.push_str("    </testcase>\n");
    }
    for g in &groups {
        let func = crate::stack::top_app_frame(&g.stack).unwrap_or_default();
        let name = format!("{} {func}", g.who());
        let msg = g.reason.as_deref().unwrap_or("flagged");
        let _ = writeln!(
            o,
            "    <testcase classname=\"{comm}\" name=\"{}\" time=\"{}\">",
            escape_attr(&name),
            xml_seconds(g.waiting_ms.unwrap_or(0))
        );
        let _ = writeln!(
            o,
            "      <failure message=\"{}\" type=\"stalled\">{}</failure>",
            escape_attr(msg),
            escape_text(&group_failure_body(g))
        );
        o.push_str("    </testcase>\n");
    }
    if !r.summary.is_empty() || !r.deadlocks.is_empty() || !r.notes.is_empty() {
        let mut out = r.summary.join("\n");
        for d in super::unstated_deadlocks(r) {
            out.push_str("\ndeadlock: ");
            out.push_str(&d);
        }
        for n in &r.notes {
            out.push_str("\nnote: ");
            out.push_str(n);
        }
        let _ = writeln!(o, "    <system-out>{}</system-out>", escape_text(&out));
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(
            escape_text("a<b>&c \"q\" 'x'"),
            "a&lt;b&gt;&amp;c \"q\" 'x'"
        );
        assert_eq!(
            escape_attr("a<b>&c \"q\" 'x'"),
            "a&lt;b&gt;&amp;c &quot;q&quot; &apos;x&apos;"
        );
        assert_eq!(escape_attr("1\n2\t3\r"), "1&#10;2&#9;3&#13;");
        assert_eq!(escape_text("1\n2\t3\r"), "1\n2\t3&#13;");
        // Control characters have no place in XML 1.0, not even as references.
        assert_eq!(
            escape_text("a\u{1}b\u{1b}[0m\u{FFFF}"),
            "a\u{FFFD}b\u{FFFD}[0m\u{FFFD}"
        );
        assert_eq!(escape_text("ünï €"), "ünï €");
    }

    #[test]
    fn one_failing_case_per_flagged_thread() {
        let x = junit(&testutil::report());
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"));
        assert!(x.contains(
            "<testsuite name=\"stallprobe\" tests=\"3\" failures=\"3\" errors=\"0\" skipped=\"0\" time=\"4.003\">"
        ));
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 3);
        assert!(x.contains(
            "<testcase classname=\"deadlock\" name=\"tid 101 (locker-a)\" time=\"4.001\">"
        ));
        assert!(x.contains("<failure message=\"blocked in futex on FUTEX_WAIT_PRIVATE"));
        // The body: reason, user stack with files and lines, kernel stack.
        assert!(
            x.contains("#3  take_second_lock  /ws/tests/workloads/c/deadlock.c:26  [deadlock]")
        );
        assert!(x.contains("kernel stack:\n  futex_do_wait\n"));
        assert!(x.contains("<property name=\"verdict\" value=\"stalled\"/>"));
        assert!(!x.contains("name=\"shutdown\""));
    }

    #[test]
    fn hostile_names_are_escaped() {
        let mut r = testutil::report();
        r.target.comm = "a\"b<c>&d".into();
        r.threads[1].name = "x'<y>\n".into();
        r.threads[1].reason = Some("waits on \"q\" & <r>\u{7}".into());
        let x = junit(&r);
        assert!(x.contains("classname=\"a&quot;b&lt;c&gt;&amp;d\""));
        assert!(x.contains("name=\"tid 101 (x&apos;&lt;y&gt;&#10;)\""));
        assert!(x.contains("message=\"waits on &quot;q&quot; &amp; &lt;r&gt;\u{FFFD}\""));
        assert!(x.contains(">waits on \"q\" &amp; &lt;r&gt;\u{FFFD}\n"));
        // Nothing unescaped slipped through: every `<` opens a known element.
        for part in x.split('<').skip(1) {
            let tag = part
                .trim_start_matches('/')
                .split([' ', '>', '/'])
                .next()
                .unwrap();
            assert!(
                [
                    "?xml",
                    "testsuites",
                    "testsuite",
                    "properties",
                    "property",
                    "testcase",
                    "failure",
                    "system-out"
                ]
                .contains(&tag),
                "unexpected tag {tag:?} in\n{x}"
            );
        }
    }

    #[test]
    fn nothing_flagged_is_one_case_passing_or_failing_with_the_verdict() {
        let x = junit(&testutil::clean_report());
        assert!(x.contains("tests=\"1\" failures=\"0\""));
        assert!(x.contains("<testcase classname=\"deadlock\" name=\"shutdown\" time=\"0.012\">"));
        assert!(!x.contains("<failure"));
        // Stalled with no thread to blame (goroutines): the shutdown case fails.
        let mut r = testutil::clean_report();
        r.verdict = Verdict::Stalled;
        r.summary = vec!["stalled: the stall is at the goroutine level".into()];
        let x = junit(&r);
        assert!(x.contains("tests=\"1\" failures=\"1\""));
        assert!(x.contains(
            "<failure message=\"stalled: the stall is at the goroutine level\" type=\"stalled\">"
        ));
    }
}
