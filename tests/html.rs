//! `--html FILE` opened in a real browser: Debian's Chromium, headless, with the network cut
//! (`--host-resolver-rules`, and the page's own Content-Security-Policy). `--dump-dom` gives the
//! DOM after the page's script ran, which records the rendered size of the verdict, the
//! wait-for graph, the timeline and the flame graph (`data-rendered` on `<body>`); a
//! `--screenshot` of the page must be a real PNG of the window's size.
//!
//! The demo's screenshot is kept at `target/html/report-demo.png`; `docs/report.png` is a copy.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use stallprobe_tests::{
    build_c, flagged_names, repo_root, report_path, require_root, run_with_timeout, stallprobe,
    workload_dir,
};

/// `stallprobe run … --html FILE -- bin`: the JSON report and the page.
fn report_and_page(tag: &str, bin: &Path) -> (Value, String, std::path::PathBuf) {
    let html = workload_dir().join(format!("{tag}-{}.html", std::process::id()));
    let _ = std::fs::remove_file(&html);
    let json = report_path(tag);
    let run = stallprobe(
        &[
            "run",
            "--stop-after",
            "1s",
            "--grace",
            "2s",
            "--format",
            "json",
            "-o",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON report ({e})\n{}", run.stderr));
    let _ = std::fs::remove_file(&json);
    assert_eq!(run.code, 1, "stalled\n{}", run.stderr);
    let page = std::fs::read_to_string(&html)
        .unwrap_or_else(|e| panic!("no --html file ({e})\n{}", run.stderr));
    (report, page, html)
}

/// Nothing in the page can reach the network: no external script, style, image or frame.
fn assert_self_contained(page: &str) {
    for bad in [
        "<script src",
        "<link",
        "src=\"http",
        "src=\"//",
        "url(http",
        "url(//",
        "@import",
    ] {
        assert!(!page.contains(bad), "the page has {bad:?}");
    }
    assert_eq!(page.matches("<script").count(), 1, "one inline script");
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"));
}

fn chromium(args: &[&str], page: &Path) -> String {
    // A profile of its own per run: tests run in parallel, and Chromium locks its profile.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = workload_dir().join(format!("chromium-profile-{}-{n}", std::process::id()));
    let run = run_with_timeout(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                // No name resolves: a page that fetched anything would show it broken.
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(120),
    );
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(run.code, 0, "chromium failed:\n{}", run.stderr);
    run.stdout
}

/// The page's `data-rendered` record: sizes (`WxH`) of what it drew and the flagged count.
fn rendered(dom: &str) -> Value {
    let start = dom
        .find("data-rendered=\"")
        .unwrap_or_else(|| panic!("the page's script did not run:\n{dom}"))
        + "data-rendered=\"".len();
    let end = start + dom[start..].find('"').unwrap();
    let json = dom[start..end].replace("&quot;", "\"");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Width and height of a `WxH` size, both above the given minimums.
fn assert_drawn(r: &Value, what: &str, min_w: u32, min_h: u32) {
    let s = r[what].as_str().unwrap_or_default();
    let (w, h) = s
        .split_once('x')
        .map(|(w, h)| (w.parse::<u32>().unwrap_or(0), h.parse::<u32>().unwrap_or(0)))
        .unwrap_or_default();
    assert!(
        w >= min_w && h >= min_h,
        "{what} rendered {s:?}, want at least {min_w}x{min_h}: {r}"
    );
}

/// A PNG of `w`x`h` (from its IHDR), not a blank page (a blank PNG is a few KB).
fn assert_png(path: &Path, w: u32, h: u32) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let dim = |o: usize| u32::from_be_bytes(png[o..o + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (w, h), "screenshot size");
    assert!(png.len() > 40_000, "{} bytes: a blank page?", png.len());
}

#[test]
fn deadlock_page_renders_the_flagged_threads_and_the_cycle() {
    require_root();
    let bin = build_c("deadlock");
    let (report, page, html) = report_and_page("html-deadlock", &bin);
    assert_self_contained(&page);
    assert_eq!(flagged_names(&report), ["locker-a", "locker-b", "main"]);

    let dom = chromium(&["--dump-dom", "--window-size=1280,1600"], &html);
    let r = rendered(&dom);
    assert_eq!(r["flagged"], 3, "{r}");
    assert_drawn(&r, "verdict", 600, 40);
    assert_drawn(&r, "graph", 200, 150);
    assert_drawn(&r, "timeline", 400, 60);
    assert_drawn(&r, "flamegraph", 400, 100);
    // The verdict first, then each flagged thread by name, with its stacks.
    let verdict = dom
        .find("id=\"verdict\" class=\"stalled\"")
        .expect("verdict");
    for name in ["locker-a", "locker-b", "main"] {
        let at = dom
            .find(&format!("<span class=\"tname\">{name}</span>"))
            .unwrap_or_else(|| panic!("{name} not named in the page"));
        assert!(verdict < at);
    }
    assert!(dom.contains("take_second_lock"), "stack frames");
    // The graph: both lockers in the cycle, its two edges red.
    assert_eq!(
        dom.matches("class=\"node flagged cycle\"").count(),
        2,
        "{dom}"
    );
    assert_eq!(dom.matches("class=\"edge cycle\"").count(), 2, "{dom}");

    let png = workload_dir().join(format!("html-deadlock-{}.png", std::process::id()));
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
        ],
        &html,
    );
    assert_png(&png, 1280, 1600);
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(&html);
}

#[test]
fn demo_page_renders_and_its_screenshot_is_kept() {
    require_root();
    let bin = build_c("demo_service");
    let (report, page, html) = report_and_page("html-demo", &bin);
    assert_self_contained(&page);
    let flagged = flagged_names(&report);
    assert!(flagged.contains(&"worker-2".to_string()), "{flagged:?}");

    let dom = chromium(&["--dump-dom", "--window-size=1280,2000"], &html);
    let r = rendered(&dom);
    assert_eq!(r["flagged"], flagged.len(), "{r}");
    assert_drawn(&r, "graph", 200, 100);
    assert_drawn(&r, "timeline", 400, 60);
    for name in &flagged {
        assert!(
            dom.contains(&format!("<span class=\"tname\">{name}</span>")),
            "{name} not named"
        );
    }
    // The main thread (demo_service) waits for worker-2 (pthread_join): an edge of the graph.
    assert!(
        dom.contains("<title>demo_service waits for worker-2"),
        "{dom}"
    );

    let dir = repo_root().join("target/html");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("report-demo.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
        ],
        &html,
    );
    assert_png(&png, 1280, 2000);
    let _ = std::fs::remove_file(&html);
}
