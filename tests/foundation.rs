//! Foundation: `stallprobe --pid N` on a `gcc -O2` program (no frame pointers) whose threads
//! block on purpose. Real probes, real kernel, real binary.

use std::{process::Command, time::Duration};

use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn start_foundation(args: &[&str]) -> Workload {
    require_root();
    let bin = build_c("foundation");
    Workload::start(Command::new(bin).args(args), Duration::from_secs(20))
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn lists_blocked_threads_with_call_wait_object_and_symbolized_stack() {
    let w = start_foundation(&[]);
    let pid = w.pid().to_string();
    let run = stallprobe(
        &["--pid", &pid, "--duration", "3s", "--format", "json"],
        RUN_TIMEOUT,
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let r = run.json();
    assert_eq!(r["schema"], "stallprobe/report-v1");
    assert_eq!(r["target"]["pid"].as_u64().unwrap().to_string(), pid);
    assert_eq!(r["verdict"], "observed");
    assert_eq!(r["dropped_events"], 0);

    // The deadlocked pair: each waits on the mutex the other holds.
    for (name, waits_on, func) in [
        ("locker-a", "mutex_b", "locker_a"),
        ("locker-b", "mutex_a", "locker_b"),
    ] {
        let t = thread(&r, name);
        assert_eq!(t["state"], "blocked", "{name}: {t}");
        assert_eq!(t["syscall"], "futex", "{name}");
        assert!(
            t["blocked_ms"].as_u64().unwrap() >= 2500,
            "{name}: {}",
            t["blocked_ms"]
        );
        assert_eq!(t["wait"]["kind"], "futex");
        assert_eq!(
            hex(t["wait"]["addr"].as_str().unwrap()),
            hex(w.fact(waits_on)),
            "{name}"
        );
        // DWARF unwinding through glibc (no frame pointers) reaches the program's own code.
        assert_frame(t, "take_second_lock", "foundation.c");
        assert_frame(t, func, "foundation.c");
        let funcs = stack_functions(t);
        let lock = funcs
            .iter()
            .position(|f| f.contains("pthread_mutex_lock"))
            .expect("pthread_mutex_lock frame");
        let own = funcs.iter().position(|f| f == "take_second_lock").unwrap();
        assert!(
            lock < own,
            "libc frames first, then the program's: {funcs:?}"
        );
        let kernel: Vec<&str> = t["kernel_stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        assert!(
            kernel.iter().any(|f| f.contains("futex")),
            "kernel stack {kernel:?}"
        );
    }

    let udp = thread(&r, "udp-recv");
    assert_eq!(udp["state"], "blocked");
    assert_eq!(udp["syscall"], "recvfrom");
    assert!(udp["blocked_ms"].as_u64().unwrap() >= 2500);
    assert_eq!(udp["wait"]["kind"], "fd");
    assert_eq!(
        udp["wait"]["fd"].as_u64().unwrap().to_string(),
        w.fact("udp_fd")
    );
    assert!(
        udp["wait"]["target"]
            .as_str()
            .unwrap()
            .starts_with("socket:[")
    );
    assert_frame(udp, "wait_for_datagram", "foundation.c");
    assert_frame(udp, "udp_receiver", "foundation.c");

    let ep = thread(&r, "epoll-wait");
    assert_eq!(ep["state"], "blocked");
    assert_eq!(ep["syscall"], "epoll_wait");
    assert!(ep["blocked_ms"].as_u64().unwrap() >= 2500);
    assert_eq!(
        ep["wait"]["fd"].as_u64().unwrap().to_string(),
        w.fact("epoll_fd")
    );
    assert_frame(ep, "wait_for_events", "foundation.c");

    // Many short waits: counted in the histogram, never reported as blocked past the threshold.
    let short = thread(&r, "short-waits");
    let futex = &short["blocks"]["futex"];
    assert!(
        futex["count"].as_u64().unwrap() > 100,
        "short-waits futex stats: {futex}"
    );
    assert!(futex["p50_ms"].as_f64().unwrap() < 50.0, "{futex}");
    assert!(futex["max_ms"].as_f64().unwrap() < 500.0, "{futex}");
    assert!(short["blocked_ms"].as_u64().unwrap_or(0) < 500);
    assert!(
        !run.stderr.contains("short-waits blocked"),
        "live lines:\n{}",
        run.stderr
    );
    for name in ["locker-a", "locker-b", "udp-recv", "epoll-wait"] {
        assert!(
            run.stderr.contains(&format!("{name} blocked")),
            "no live line for {name}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn calls_that_start_after_attach_have_exact_times_and_slow_calls_have_stacks() {
    let w = start_foundation(&["late"]);
    let pid = w.pid().to_string();
    // Attached before the deadlock forms (1 s after start) and before the first 700 ms recv ends.
    let run = stallprobe(
        &[
            "--pid",
            &pid,
            "--duration",
            "4s",
            "--threshold",
            "500ms",
            "--format",
            "json",
        ],
        RUN_TIMEOUT,
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let r = run.json();
    let a = thread(&r, "locker-a");
    assert_eq!(a["blocked_since"], "probe", "{a}");
    let ms = a["blocked_ms"].as_u64().unwrap();
    assert!(
        (1000..=4000).contains(&ms),
        "blocked since the deadlock formed: {ms} ms"
    );

    // recvfrom with a 700 ms timeout: each call is slow, sent with registers and a stack copy.
    let udp = thread(&r, "udp-recv");
    let stats = &udp["blocks"]["recvfrom"];
    assert!(stats["count"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["max_ms"].as_f64().unwrap() >= 600.0, "{stats}");
    let slow: Vec<&Value> = r["slow_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "udp-recv")
        .collect();
    assert!(
        !slow.is_empty(),
        "no slow calls reported: {}",
        r["slow_calls"]
    );
    let s = slow[0];
    assert_eq!(s["syscall"], "recvfrom");
    assert!(s["duration_ms"].as_f64().unwrap() >= 600.0);
    assert!(s["ret"].as_i64().unwrap() < 0, "timed out: -EAGAIN");
    assert_frame(s, "wait_for_datagram", "foundation.c");
    assert_frame(s, "udp_receiver", "foundation.c");
    assert!(
        run.stderr.contains("slow recvfrom"),
        "live line for the slow call:\n{}",
        run.stderr
    );
}

#[test]
fn text_report_is_readable_and_goes_to_the_output_file() {
    let w = start_foundation(&[]);
    let pid = w.pid().to_string();
    let dir = std::env::temp_dir().join(format!("stallprobe-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.txt");
    let run = stallprobe(
        &[
            "--pid",
            &pid,
            "--duration",
            "2s",
            "-o",
            out.to_str().unwrap(),
            "--color",
            "never",
        ],
        RUN_TIMEOUT,
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "the report went to the file, not stdout"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "verdict: observed",
        "THREADS",
        "locker-a",
        "take_second_lock",
        "foundation.c:",
        "BLOCK TIME BY THREAD AND CALL",
        "short-waits",
        "kernel: ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains('\x1b'), "no colour codes with --color never");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn target_exiting_mid_run_is_reported() {
    require_root();
    let mut child = Command::new("sleep").arg("1.5").spawn().unwrap();
    let pid = child.id().to_string();
    let reaper = std::thread::spawn(move || child.wait());
    let run = stallprobe(
        &["--pid", &pid, "--duration", "20s", "--format", "json"],
        RUN_TIMEOUT,
    );
    let _ = reaper.join();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(15),
        "stopped when the target exited"
    );
    let r = run.json();
    assert_eq!(r["target"]["exited"], true);
    assert!(
        r["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("exited")),
        "notes: {}",
        r["notes"]
    );
    assert!(
        run.stderr.contains(&format!("process {pid} exited")),
        "{}",
        run.stderr
    );
}

/// `--hook auto` (the default) picks fentry where the kernel allows it, raw tracepoints where it
/// does not, and the report's `session.hook` says which ran. The kernel matrix (`cargo xtask
/// test --kernel`) sets `STALLPROBE_TEST_AUTO_HOOK` to the hook a kernel must get (fentry on
/// Debian's 6.1 and 6.12); elsewhere either is accepted, with the fallback explained.
#[test]
fn hook_auto_reports_the_hook_that_ran() {
    let w = start_foundation(&[]);
    let pid = w.pid().to_string();
    let run = stallprobe(
        &[
            "--hook",
            "auto",
            "--pid",
            &pid,
            "--duration",
            "1s",
            "--format",
            "json",
            "--quiet",
        ],
        RUN_TIMEOUT,
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let r = run.json();
    let hook = r["session"]["hook"].as_str().unwrap_or("");
    let fallback_noted = r["notes"].to_string().contains("fentry is not available");
    match std::env::var("STALLPROBE_TEST_AUTO_HOOK") {
        Ok(want) => assert_eq!(hook, want, "session: {}", r["session"]),
        Err(_) => assert!(
            hook == "fentry" || hook == "raw",
            "session: {}",
            r["session"]
        ),
    }
    assert_eq!(
        fallback_noted,
        hook == "raw",
        "a fallback to raw tracepoints is explained in the notes, and only then: {}",
        r["notes"]
    );
    assert!(
        thread(&r, "locker-a")["state"] == "blocked",
        "{}",
        describe(&r)
    );
}
