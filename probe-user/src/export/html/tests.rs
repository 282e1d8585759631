use base64::Engine as _;
use sha2::Digest as _;

use super::*;
use crate::export::testutil;

fn page(r: &Report) -> String {
    html(
        r,
        &SourceLinks {
            roots: vec![PathBuf::from("/ws")],
            blob_base: None,
        },
    )
}

#[test]
fn the_script_hash_in_the_policy_is_the_scripts() {
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    let want = format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    assert_eq!(SCRIPT_HASH, want);
    let p = page(&testutil::report());
    assert!(p.contains(&format!("script-src '{want}'")), "{p}");
    assert_eq!(p.matches("<script>").count(), 1);
}

#[test]
fn verdict_first_then_each_flagged_thread_with_its_stacks() {
    let p = page(&testutil::report());
    let verdict = p.find("<header id=\"verdict\" class=\"stalled\">").unwrap();
    let first_thread = p.find("<article class=\"flagged thread\"").unwrap();
    assert!(verdict < first_thread);
    for (tid, name) in [(100, "main"), (101, "locker-a"), (102, "locker-b")] {
        assert!(
            p.contains(&format!(
                "id=\"tid-{tid}\" data-tid=\"{tid}\"><h3>tid {tid} <span class=\"tname\">{name}</span>"
            )),
            "{name}"
        );
    }
    assert_eq!(p.matches("<article class=\"flagged thread\"").count(), 3);
    // Collapsible stacks, the application frame linked to its file and line.
    assert!(p.contains("<details class=\"stack\" open><summary>user stack (7 frames)"));
    assert!(p.contains("<summary>kernel stack (3 frames)"));
    assert!(p.contains(
        "<li class=\"app\"><span class=\"fn\">take_second_lock</span><a class=\"src\" href=\"file:///ws/tests/workloads/c/deadlock.c\" title=\"/ws/tests/workloads/c/deadlock.c\">deadlock.c:26</a>"
    ), "{p}");
    // The timeline, the flame graph, the table.
    assert!(p.contains("<svg class=\"timeline\""));
    assert!(p.contains("<iframe class=\"flamegraph\""));
    assert!(p.contains("<table class=\"threads\">"));
    assert!(p.ends_with("</body></html>\n"));
}

#[test]
fn frames_link_to_the_repository_under_github_actions() {
    let links = SourceLinks {
        roots: vec![PathBuf::from("/ws")],
        blob_base: Some("https://github.com/o/r/blob/abc123".into()),
    };
    assert_eq!(
        links.href("/ws/src/a b.c", Some(7)).as_deref(),
        Some("https://github.com/o/r/blob/abc123/src/a%20b.c#L7")
    );
    // Outside the workspace: the local file.
    assert_eq!(
        links.href("/usr/include/x.h", Some(1)).as_deref(),
        Some("file:///usr/include/x.h")
    );
    // A relative DWARF path cannot be linked.
    assert_eq!(links.href("./nptl/futex-internal.c", Some(57)), None);
}

#[test]
fn every_string_from_the_target_is_escaped() {
    let mut r = testutil::report();
    let evil = "<script>alert(1)</script>\"'&";
    r.target.comm = evil.into();
    r.target.exe = evil.into();
    r.summary.push(evil.into());
    r.notes.push(evil.into());
    for t in &mut r.threads {
        t.name = evil.into();
        t.reason = Some(evil.into());
        for f in &mut t.stack {
            f.function = Some(evil.into());
            f.file = Some(format!("/ws/{evil}.c"));
            f.module = Some(evil.into());
        }
        for k in &mut t.kernel_stack {
            k.function = evil.into();
        }
    }
    r.timeline.push(crate::report::TimelineEntry {
        t_ms: 1,
        event: evil.into(),
        tid: None,
    });
    let p = page(&r);
    // Our one script, and no other tag from the target.
    assert_eq!(p.matches("<script>").count(), 1, "{p}");
    assert_eq!(p.matches("</script>").count(), 1);
    assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    // Goroutine groups too.
    let mut g = testutil::go_report();
    g.goroutine_groups[0].reason = Some(evil.into());
    g.goroutine_groups[0].stack[1].function = Some(evil.into());
    let p = page(&g);
    assert_eq!(p.matches("<script>").count(), 1, "{p}");
}

#[test]
fn goroutine_groups_are_flagged_articles() {
    let p = page(&testutil::go_report());
    assert_eq!(
        p.matches("<article class=\"flagged goroutines\"").count(),
        2
    );
    assert!(p.contains("<h3>2000 goroutines<span class=\"badge flag\">flagged</span>"));
    assert!(p.contains("2002 goroutines in 3 groups (go1.23.9)"));
    assert!(p.contains("created by"));
}

#[test]
fn the_flame_graph_is_embedded_not_fetched() {
    let p = page(&testutil::report());
    let at = p.find("src=\"data:image/svg+xml;base64,").unwrap() + 31;
    let b64: String = p[at..].chars().take_while(|c| *c != '"').collect();
    let svg = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("take_second_lock"), "{svg}");
    assert_eq!(svg_height("<svg width=\"1\" height=\"294\" x>"), Some(294));
    // Nothing is loaded from elsewhere.
    for bad in ["http://", "https://", "src=\"//", "@import"] {
        let outside_svg_ns = p
            .replace("http://www.w3.org/2000/svg", "")
            .replace("https://github.com", "");
        assert!(!outside_svg_ns.contains(bad), "{bad}");
    }
}

#[test]
fn clean_and_observed_reports_render_too() {
    let p = page(&testutil::clean_report());
    assert!(p.contains("<header id=\"verdict\" class=\"clean\">"));
    assert!(p.contains("No thread kept the process alive."));
    let mut r = testutil::report();
    r.verdict = Verdict::Observed;
    r.shutdown = None;
    let p = page(&r);
    assert!(p.contains("no shutdown signal was seen"));
}

#[test]
fn python_and_java_frames_say_their_language() {
    let mut r = testutil::report();
    let f = &mut r.threads[0].stack[0];
    f.lang = Some(crate::report::Lang::Python);
    f.function = Some("handle_request".into());
    let p = page(&r);
    assert!(
        p.contains("<span class=\"fn\">handle_request</span>")
            && p.contains("<span class=\"badge\">python</span>"),
        "{p}"
    );
}
