//! The scheduler hook (`--hook sched`): blocks seen at the switch-out and switch-in of a target
//! thread inside a probed call. What it counts, and where it counts differently from the syscall
//! hooks (docs/design.md, "Choosing the hook"), on the real kernel with the real binary.
//!
//! Every other integration test runs under this hook too with `STALLPROBE_TEST_HOOK=sched`.

use std::{process::Command, time::Duration};

use serde_json::Value;
use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn start_workload() -> Workload {
    require_root();
    let bin = build_c("sleeps_and_calls");
    Workload::start(&mut Command::new(bin), Duration::from_secs(20))
}

/// `stallprobe --hook HOOK --pid PID --duration 4s` (the hook named: the harness adds none).
fn watch(w: &Workload, hook: &str) -> Value {
    let pid = w.pid().to_string();
    let run = stallprobe(
        &[
            "--hook",
            hook,
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
    assert_eq!(r["session"]["hook"], hook, "session: {}", r["session"]);
    r
}

fn count(t: &Value, call: &str) -> u64 {
    t["blocks"][call]["count"].as_u64().unwrap_or(0)
}

/// Calls that sleep are blocks under every hook; calls that return at once are blocks for the
/// syscall hooks only.
#[test]
fn the_scheduler_hook_counts_sleeps_not_calls() {
    let w = start_workload();
    let sched = watch(&w, "sched");
    let raw = watch(&w, "raw");

    // A byte every 20 ms for 4 s: ~200 reads that each sleep, under either hook.
    for r in [&sched, &raw] {
        let ticked = thread(r, "ticked");
        let n = count(ticked, "read");
        assert!((100..=260).contains(&n), "ticked reads: {n}; {ticked}");
        let max = ticked["blocks"]["read"]["max_ms"].as_f64().unwrap();
        assert!(max < 500.0, "each read waits ~20 ms: {max}");
        // Per-call block durations: the mean is the 20 ms between two bytes, not the time
        // the thread ran.
        let mean = ticked["blocks"]["read"]["total_ms"].as_f64().unwrap() / n as f64;
        assert!(
            (10.0..=45.0).contains(&mean),
            "mean read block {mean} ms; {ticked}"
        );
        let p50 = ticked["blocks"]["read"]["p50_ms"].as_f64().unwrap();
        assert!((8.0..=64.0).contains(&p50), "p50 {p50} ms; {ticked}");
    }
    // read() of /dev/zero never sleeps: tens of thousands of calls, next to no blocks.
    let busy = count(thread(&raw, "never-sleeps"), "read");
    assert!(busy > 10_000, "the syscall hook counts every call: {busy}");
    let slept = count(thread(&sched, "never-sleeps"), "read");
    assert!(
        slept <= 5,
        "the scheduler hook counts only calls that sleep: {slept} of them"
    );
}

/// A wait interrupted by a signal and restarted by the kernel after the handler is one block:
/// still blocked since it began, not woken ~25 times (once per SIGUSR1).
#[test]
fn a_wait_restarted_after_each_signal_stays_one_block() {
    let w = start_workload();
    let r = watch(&w, "sched");
    let t = thread(&r, "restarted");
    assert_eq!(t["state"], "blocked", "{t}");
    assert_eq!(t["syscall"], "futex", "{t}");
    assert_eq!(
        t["blocked_since"], "probe",
        "seen starting after attach: {t}"
    );
    let ms = t["blocked_ms"].as_u64().unwrap();
    assert!(
        ms >= 1500,
        "blocked since the wait began, through the signals: {ms} ms"
    );
    assert_eq!(
        count(t, "futex"),
        0,
        "no futex block ended (a restart is not a wake-up): {t}"
    );
    assert_frame(t, "wait_forever", "sleeps_and_calls.c");
}

/// Slow calls: the scheduler hook cannot see the return value, and the kernel can copy the stack
/// only when the CPU has the process's memory mapped at the wake-up (here the timer wakes the
/// thread on an idle CPU, usually): the stack comes from the look that saw the call blocked.
#[test]
fn slow_calls_under_the_scheduler_hook_have_stacks_and_no_return_value() {
    let w = start_workload();
    let r = watch(&w, "sched");
    let slow: Vec<&Value> = r["slow_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "slow-recv")
        .collect();
    assert!(slow.len() >= 3, "recvfrom times out every 700 ms: {slow:?}");
    for s in &slow {
        assert_eq!(s["syscall"], "recvfrom", "{s}");
        let ms = s["duration_ms"].as_f64().unwrap();
        assert!((600.0..1500.0).contains(&ms), "{s}");
        assert_eq!(s["ret_known"], false, "{s}");
        assert_frame(s, "wait_for_datagram", "sleeps_and_calls.c");
    }
    assert!(
        !r["notes"].to_string().contains("without a stack"),
        "{}",
        r["notes"]
    );
    let t = thread(&r, "slow-recv");
    assert!(count(t, "recvfrom") >= 3, "{t}");
}

/// Shutdown verdicts under the scheduler hook, with `run` (the probes attached before the
/// command starts): a lock-order deadlock is stalled with both lockers and the joining main
/// flagged, their blocks timed by the hook since they began; a clean shutdown is clean.
#[test]
fn shutdown_verdicts_under_the_scheduler_hook() {
    require_root();
    for (name, stalled) in [("deadlock", true), ("clean_shutdown", false)] {
        let bin = build_c(name);
        let out = report_path(&format!("sched-{name}"));
        let run = stallprobe(
            &[
                "run",
                "--hook",
                "sched",
                "--stop-after",
                "2s",
                "--grace",
                "2s",
                "--format",
                "json",
                "-o",
                out.to_str().unwrap(),
                "--",
                bin.to_str().unwrap(),
            ],
            RUN_TIMEOUT,
        );
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{}", run.stderr));
        let r: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["session"]["hook"], "sched", "session: {}", r["session"]);
        if !stalled {
            assert_clean(&run, &r);
            continue;
        }
        assert_stalled(&run, &r);
        assert_flagged_exactly(&r, &["locker-a", "locker-b", "main"]);
        for locker in ["locker-a", "locker-b"] {
            let t = flagged_thread(&r, locker);
            assert_eq!(t["state"], "blocked", "{}", describe(&r));
            assert_eq!(t["syscall"], "futex", "{t}");
            assert_eq!(t["blocked_since"], "probe", "timed by the hook: {t}");
            assert!(t["blocked_ms"].as_u64().unwrap() >= 3000, "{t}");
            assert_reason(
                t,
                "deadlocked (2 threads): blocked in futex",
                &["never woke up", "take_second_lock"],
            );
            assert_frame(t, "take_second_lock", "deadlock.c");
        }
        let main = flagged_thread(&r, "main");
        assert_eq!(main["syscall"], "futex", "{main}");
        assert_frame(main, "shutdown_and_join", "deadlock.c");
    }
}
