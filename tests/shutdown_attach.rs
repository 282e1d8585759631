//! Shutdown verdicts through `stallprobe --pid N`: the workload is already running, stallprobe
//! attaches, and the stop signal comes from someone else (`kill -TERM N`, sent by this test
//! about a second after stallprobe is watching). Same verdicts as under `stallprobe run`.

use std::{process::Command, time::Duration};

use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: &str = "2s";
const SIGNAL_DELAY: Duration = Duration::from_secs(1);

fn start_c(name: &str) -> Workload {
    require_root();
    let bin = build_c(name);
    Workload::start(Command::new(bin).arg("--ready"), START_TIMEOUT)
}

fn attach(tag: &str, w: &Workload) -> (Run, Value) {
    attach_and_stop(tag, w, GRACE, SIGNAL_DELAY, RUN_TIMEOUT)
}

/// The signal in the report is ours: sent by this process.
#[track_caller]
fn assert_sent_by_us(r: &Value) {
    assert_eq!(
        r["shutdown"]["sender_pid"].as_u64(),
        Some(std::process::id() as u64),
        "{}",
        r["shutdown"]
    );
}

#[test]
fn attach_c_deadlock_then_kill_term_is_stalled() {
    let w = start_c("deadlock");
    let (run, r) = attach("attach-deadlock", &w);
    assert_stalled(&run, &r);
    assert_sent_by_us(&r);
    assert_eq!(r["target"]["pid"].as_u64(), Some(w.pid() as u64));
    assert_flagged_exactly(&r, &["locker-a", "locker-b", "main"]);
    let mutex =
        |fact: &str| u64::from_str_radix(w.fact(fact).trim_start_matches("0x"), 16).unwrap();
    for (name, func, waits_on) in [
        ("locker-a", "locker_a", "mutex_b"),
        ("locker-b", "locker_b", "mutex_a"),
    ] {
        let t = flagged_thread(&r, name);
        assert_eq!(t["state"], "blocked", "{name}\n{}", describe(&r));
        assert_eq!(t["syscall"], "futex");
        assert_reason(
            t,
            "deadlocked (2 threads): blocked in futex",
            &["never woke up", "take_second_lock", "held by tid"],
        );
        let addr = t["wait"]["addr"].as_str().unwrap_or("0x0");
        assert_eq!(
            u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap(),
            mutex(waits_on),
            "{name} waits on {waits_on}"
        );
        // Blocked since before stallprobe attached: at least the time it watched.
        assert!(
            t["blocked_ms"].as_u64().unwrap_or(0) >= 2000,
            "{name}: {}",
            t["blocked_ms"]
        );
        assert_frame(t, "take_second_lock", "deadlock.c");
        assert_frame(t, func, "deadlock.c");
    }
    let main = flagged_thread(&r, "main");
    assert_eq!(main["syscall"], "futex");
    assert_reason(main, "blocked", &["futex", "shutdown_and_join"]);
    assert_frame(main, "shutdown_and_join", "deadlock.c");
}

#[test]
fn attach_c_clean_shutdown_then_kill_term_is_clean() {
    let w = start_c("clean_shutdown");
    let (run, r) = attach("attach-clean", &w);
    assert_clean(&run, &r);
    assert_sent_by_us(&r);
    for name in ["main", "worker-0", "worker-1", "worker-2", "ticker"] {
        assert_eq!(
            thread(&r, name)["state"],
            "exited",
            "{name}\n{}",
            describe(&r)
        );
    }
}

#[test]
fn attach_c_epoll_woken_then_kill_term_is_clean() {
    let w = start_c("epoll_woken");
    let (run, r) = attach("attach-epoll-woken", &w);
    assert_clean(&run, &r);
    assert_sent_by_us(&r);
}

#[test]
fn attach_c_wake_raced_then_kill_term_is_flagged_woke() {
    let w = start_c("wake_raced");
    let (run, r) = attach("attach-wake-raced", &w);
    assert_stalled(&run, &r);
    assert_sent_by_us(&r);
    assert_flagged_exactly(&r, &["server"]);
    let t = flagged_thread(&r, "server");
    let woke = t["woke_after_signal"].as_u64().unwrap_or(0);
    assert!(woke >= 10, "woke_after_signal {woke}\n{}", describe(&r));
    assert_reason(t, "woke", &["serve_events"]);
    // Almost always back in epoll_wait at the last look; possibly just woken and runnable.
    if t["state"] == "blocked" {
        assert_eq!(t["syscall"], "epoll_wait");
        assert_eq!(
            t["wait"]["fd"].as_u64().map(|f| f.to_string()).as_deref(),
            Some(w.fact("epoll_fd"))
        );
        assert_frame(t, "serve_events", "wake_raced.c");
    }
}

#[test]
fn attach_c_pipe_producer_then_kill_term_is_flagged_asleep_in_write() {
    let w = start_c("pipe_producer");
    let (run, r) = attach("attach-pipe-producer", &w);
    assert_stalled(&run, &r);
    assert_sent_by_us(&r);
    assert_flagged_exactly(&r, &["producer"]);
    let t = flagged_thread(&r, "producer");
    assert_eq!(t["state"], "sleeping", "{}", describe(&r));
    assert_eq!(t["syscall"], "write");
    assert_eq!(
        t["wait"]["fd"].as_u64().map(|f| f.to_string()).as_deref(),
        Some(w.fact("pipe_write_fd"))
    );
    assert_reason(t, "asleep in write", &["write_record"]);
    assert_frame(t, "write_record", "pipe_producer.c");
}

#[test]
fn attach_go_goroutines_stuck_on_channels_flag_no_os_thread() {
    require_root();
    let bin = build_go("chan_stuck");
    let w = Workload::start(Command::new(bin).arg("--ready"), START_TIMEOUT);
    let (run, r) = attach("attach-go-chan-stuck", &w);
    assert_stalled(&run, &r);
    assert_sent_by_us(&r);
    assert_flagged_exactly(&r, &[]);
    for t in live_threads(&r) {
        assert_eq!(t["role"], "runtime", "tid {}\n{}", t["tid"], describe(&r));
    }
    // The stall is in goroutines: the summary names them (issue 11 replaced the advice to dump
    // them with `kill -QUIT`).
    let summary = r["summary"].to_string();
    assert!(
        summary.contains("(main.produce): blocked in chan send"),
        "{summary}"
    );
    assert!(!summary.contains("kill -QUIT"), "{summary}");
}
