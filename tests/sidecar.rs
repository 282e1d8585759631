//! `stallprobe watch`, the sidecar: structured verdicts in the real journal (journald started
//! standalone: systemd is not PID 1 here), restarts followed through the cgroup, readiness via
//! sd_notify, the metrics endpoint, and the systemd unit file.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use stallprobe_tests::*;

#[path = "sidecar_support.rs"]
mod sidecar_support;
use sidecar_support::*;

#[test]
fn verdicts_go_to_the_journal_and_restarts_are_followed() {
    require_root();
    journald();
    let bin = build_c("deadlock");
    let unit = format!("stallprobe-test-{}.service", std::process::id());
    let cg = Cgroup::for_unit(&unit);
    let first = cg.start(&bin, &[]);
    std::thread::sleep(Duration::from_millis(500));

    let (notify, notify_path) = notify_socket();
    let mut sp = Command::new(stallprobe_bin())
        .args(["watch", "--unit", &unit])
        .args(["--grace", "1s", "--quiet"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = recv_until(&notify, "READY=1");
    assert!(ready.contains("STATUS=watching"), "{ready}");

    // The service is stopped and hangs: a verdict with one entry per flagged thread.
    term(&first);
    let entries = wait_for_entries(first.id(), 4);
    let verdict = entries
        .iter()
        .find(|e| e["STALLPROBE_FLAGGED"].is_string())
        .unwrap_or_else(|| panic!("no verdict entry: {entries:?}"));
    assert_eq!(verdict["STALLPROBE_VERDICT"], "stalled");
    assert_eq!(verdict["STALLPROBE_UNIT"], unit.as_str());
    assert_eq!(verdict["STALLPROBE_SIGNAL"], "SIGTERM");
    assert_eq!(verdict["STALLPROBE_FLAGGED"], "3");
    assert_eq!(verdict["PRIORITY"], "3");
    let mut threads: Vec<String> = entries
        .iter()
        .filter_map(|e| e["STALLPROBE_THREAD"].as_str().map(str::to_string))
        .collect();
    threads.sort();
    assert_eq!(threads, ["locker-a", "locker-b", "main"], "{entries:?}");
    for e in entries
        .iter()
        .filter(|e| e["STALLPROBE_THREAD"].is_string())
    {
        assert!(e["STALLPROBE_TID"].as_str().unwrap().parse::<u32>().is_ok());
        assert!(!e["STALLPROBE_REASON"].as_str().unwrap().is_empty());
        // Native protocol: multi-line stacks arrive whole.
        let stack = e["STALLPROBE_STACK"].as_str().unwrap_or("");
        assert!(stack.lines().count() > 2, "{e}");
        if e["STALLPROBE_THREAD"] != "main" {
            assert!(stack.contains("take_second_lock"), "{stack}");
            assert!(
                e["STALLPROBE_REASON"]
                    .as_str()
                    .unwrap()
                    .contains("deadlocked"),
                "{e}"
            );
        }
    }

    // Restart: the hung process is killed and a new one starts in the same cgroup.
    reap(first);
    let second = cg.start(&bin, &[]);
    std::thread::sleep(Duration::from_millis(1500)); // followed within an interval or two
    term(&second);
    let entries = wait_for_entries(second.id(), 4);
    assert!(
        entries.iter().any(|e| e["STALLPROBE_VERDICT"] == "stalled"),
        "the restarted process is watched too: {entries:?}"
    );

    // Stopping the sidecar: exit 0, STOPPING=1.
    term(&sp);
    recv_until(&notify, "STOPPING=1");
    let st = sp.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    let mut err = String::new();
    sp.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    reap(second);
    let _ = std::fs::remove_file(notify_path);
}

#[test]
fn metrics_endpoint() {
    require_root();
    let w = Workload::start(
        &mut Command::new(build_c("foundation")),
        Duration::from_secs(20),
    );
    // A free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut sp = Command::new(stallprobe_bin())
        .args([
            "watch",
            "--pid",
            &w.pid().to_string(),
            "--metrics-addr",
            &addr,
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let body = loop {
        let got = std::net::TcpStream::connect(&addr).ok().and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut b = String::new();
            s.read_to_string(&mut b).ok()?;
            Some(b)
        });
        if let Some(b) = got
            && b.contains("stallprobe_blocked_threads{call=\"futex\",role=\"app\"}")
        {
            break b;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no metrics with blocked threads"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("# TYPE stallprobe_block_duration_seconds histogram"));
    let blocked_futex: u64 = body
        .lines()
        .find(|l| l.starts_with("stallprobe_blocked_threads{call=\"futex\",role=\"app\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        blocked_futex >= 2,
        "the two lockers (and the joining main): {blocked_futex}"
    );
    assert!(body.contains("stallprobe_block_duration_seconds_count{call=\"futex\"}"));
    assert!(body.contains("stallprobe_dropped_events_total{kind=\"slow_call\"} 0"));
    assert!(body.contains("stallprobe_resident_memory_bytes"));
    assert!(body.trim_end().ends_with("# EOF"));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sp.id() as i32), Signal::SIGTERM);
    assert_eq!(sp.wait().unwrap().code(), Some(0));
}

#[test]
fn systemd_unit_file_verifies() {
    require_root();
    let unit =
        std::fs::read_to_string(repo_root().join("packaging/systemd/stallprobe@.service")).unwrap();
    // Point ExecStart at the binary under test (the packaged path is /usr/local/bin).
    let unit = unit.replace(
        "/usr/local/bin/stallprobe",
        stallprobe_bin().to_str().unwrap(),
    );
    for needle in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "MemoryMax=",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_PTRACE",
        "CAP_DAC_READ_SEARCH",
        "WatchdogSec=",
        // Least privilege (docs/security-packaging.md): its own user, only ambient
        // capabilities, a state directory, private files, the sandbox, local metrics only.
        "User=stallprobe",
        "Group=stallprobe",
        "AmbientCapabilities=",
        "CapabilityBoundingSet=",
        "StateDirectory=stallprobe",
        "UMask=0077",
        "RestrictSUIDSGID=yes",
        "LimitNOFILE=",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "TasksMax=",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    let dir = workload_dir().join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stallprobe@nginx.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("stallprobe@")).collect();
    assert!(complaints.is_empty(), "{complaints:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Each episode's report says what that episode needs, once: notes do not pile up over
/// episodes (they grew by one copy per episode before).
#[test]
fn notes_do_not_grow_from_episode_to_episode() {
    require_root();
    let bin = build_c("deadlock");
    let cg = Cgroup::for_unit(&format!("stallprobe-notes-{}.service", std::process::id()));
    let first = cg.start(&bin, &[]);
    std::thread::sleep(Duration::from_millis(500));
    // No journal: the reports go to stdout. --max-stacks 1 makes every report carry a note.
    let sp = Command::new(stallprobe_bin())
        .args(["watch", "--cgroup"])
        .arg(&cg.0)
        .args([
            "--grace",
            "1s",
            "--max-stacks",
            "1",
            "--format",
            "json",
            "--quiet",
        ])
        .env("STALLPROBE_JOURNAL_SOCKET", "/nonexistent/journal.sock")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    term(&first);
    std::thread::sleep(Duration::from_secs(4));
    reap(first);
    let second = cg.start(&bin, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    term(&second);
    std::thread::sleep(Duration::from_secs(4));
    term(&sp);
    let out = sp.wait_with_output().unwrap();
    reap(second);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reports on stdout: {e}\n{stdout}"));
    assert_eq!(reports.len(), 2, "one report per episode:\n{stdout}");
    let notes: Vec<&Vec<Value>> = reports
        .iter()
        .map(|r| r["notes"].as_array().unwrap())
        .collect();
    assert!(
        notes[0]
            .iter()
            .any(|n| n.as_str().unwrap().contains("--max-stacks")),
        "{:?}",
        notes[0]
    );
    assert_eq!(notes[0], notes[1], "the second episode's notes");
}

/// One metrics scrape (the body), if the endpoint answers.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A sidecar next to a service that runs short-lived helper processes (about 12 a second,
/// half of them exec'd, their pids reused at once): stallprobe's memory and the state it keeps stay
/// flat, and the service's stall is still judged right when it is stopped — with no helper
/// in the verdict. `cargo xtask test --soak` runs the churn for 20 minutes instead of 45 s.
#[test]
fn memory_stays_flat_over_helper_churn_with_pid_reuse() {
    require_root();
    let soak = std::env::var_os("STALLPROBE_SOAK").is_some();
    let total = Duration::from_secs(if soak { 20 * 60 } else { 45 });
    let bin = build_c("helper_churn");
    let stats = workload_dir().join(format!("helper-churn-{}.stats", std::process::id()));
    let cg = Cgroup::for_unit(&format!("stallprobe-churn-{}.service", std::process::id()));
    let service = cg.start(
        &bin,
        &[
            "--every",
            "20",
            "--hold",
            "60",
            "--stats",
            stats.to_str().unwrap(),
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let sp = Command::new(stallprobe_bin())
        .args(["watch", "--cgroup"])
        .arg(&cg.0)
        .args(["--follow-children", "--threshold", "30ms", "--grace", "2s"])
        .args(["--metrics-addr", &addr, "--format", "json", "--quiet"])
        .env("STALLPROBE_JOURNAL_SOCKET", "/nonexistent/journal.sock")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let sample = |at: Duration| {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let body = scrape(&addr).unwrap_or_else(|| panic!("no metrics at {at:?}"));
        let rss = metric(&body, "stallprobe_resident_memory_bytes").unwrap() / 1024;
        let records = metric(&body, "stallprobe_tracked_processes{what=\"records\"}").unwrap();
        let loaded = metric(&body, "stallprobe_tracked_processes{what=\"loaded\"}").unwrap();
        (rss, records, loaded)
    };
    // Warm-up: the symbolizer and the unwinder have what every helper shares.
    let early = sample(total / 3);
    let mut worst = early;
    let mut at = total / 3;
    while at < total {
        at += total / 12;
        let s = sample(at);
        worst = (worst.0.max(s.0), worst.1.max(s.1), worst.2.max(s.2));
    }
    let st = std::fs::read_to_string(&stats).unwrap_or_default();
    let field = |k: &str| -> u64 {
        st.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    let (helpers, reused) = (field("helpers"), field("reused"));
    // Stop the service: its stall is judged.
    term(&service);
    std::thread::sleep(Duration::from_secs(5));
    term(&sp);
    let out = sp.wait_with_output().unwrap();
    reap(service);
    let _ = std::fs::remove_file(&stats);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        helpers as f64 >= total.as_secs_f64() * 5.0 && reused * 2 >= helpers,
        "the churn happened: {helpers} helpers, {reused} reused pids"
    );
    eprintln!("helpers {helpers}, reused {reused}; early {early:?}, worst {worst:?}");
    assert!(
        worst.0 <= early.0 + 8 * 1024,
        "RSS grew from {} kB to {} kB over {helpers} helpers",
        early.0,
        worst.0
    );
    assert!(
        worst.1 <= 100 && worst.2 <= 100,
        "state kept for at most 100 processes: {} records, {} loaded",
        worst.1,
        worst.2
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reports on stdout: {e}\n{stdout}\n{stderr}"));
    assert_eq!(reports.len(), 1, "one episode: {stdout}\n{stderr}");
    let r = &reports[0];
    assert_eq!(r["verdict"], "stalled", "{}", describe(r));
    assert_flagged_exactly(r, &["service", "steady"]);
    assert!(
        r["timeline"].to_string().contains("SIGTERM"),
        "the shutdown is on the timeline after hours of helper exits: {}",
        r["timeline"]
    );
}
