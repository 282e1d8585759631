//! Shutdown verdicts: `stallprobe run --stop-after 2s --grace 2s` against programs that fail to
//! shut down on purpose (and two that shut down cleanly), in C, Rust (std and tokio), Python
//! and Go. Each test checks the verdict, the exit code, exactly which threads are flagged, and
//! for each flagged thread its syscall, the key phrase of its reason and the program's own
//! functions in its stack. Real probes, real kernel, real binary.
//!
//! The workloads (tests/workloads/*) say in their header comment what they do and what must be
//! flagged.

use std::time::Duration;

use stallprobe_tests::*;

/// Per stallprobe run: 2 s to the signal, 2 s of grace, plus room for slow, shared CPUs.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_AFTER: &str = "2s";
const GRACE: &str = "2s";

fn run(tag: &str, cmd: &[&str]) -> (Run, Value) {
    require_root();
    let (run, report) = run_and_stop(tag, cmd, STOP_AFTER, GRACE, RUN_TIMEOUT);
    // The report went to a file and the workloads print nothing on stdout without `--ready`.
    assert_eq!(
        run.stdout, "",
        "unexpected output on stdout (stderr:\n{})",
        run.stderr
    );
    (run, report)
}

fn run_c(name: &str) -> (Run, Value) {
    let bin = build_c(name);
    run(name, &[bin.to_str().unwrap()])
}

fn run_rust(name: &str) -> (Run, Value) {
    let bin = build_rust(name);
    run(name, &[bin.to_str().unwrap()])
}

fn run_python(name: &str) -> (Run, Value) {
    let script = python_script(name);
    run(name, &["python3", script.to_str().unwrap()])
}

fn run_go(name: &str) -> (Run, Value) {
    let bin = build_go(name);
    run(name, &[bin.to_str().unwrap()])
}

/// The thread's stack, or any of its samples taken while it ran, names `function`.
#[track_caller]
fn assert_seen_at(t: &Value, function: &str) {
    let in_stack = stack_functions(t).iter().any(|f| f == function);
    let in_samples = t["spin_samples"].as_array().is_some_and(|samples| {
        samples.iter().any(|s| {
            s.as_array()
                .is_some_and(|frames| frames.iter().any(|f| f["function"] == function))
        })
    });
    assert!(
        in_stack || in_samples,
        "thread {} was never seen in {function}: stack {:?}, samples {}",
        t["name"],
        stack_functions(t),
        t["spin_samples"]
    );
}

#[track_caller]
fn assert_wait_target(t: &Value, prefix: &str) {
    let target = t["wait"]["target"].as_str().unwrap_or("");
    assert!(
        target.starts_with(prefix),
        "thread {} waits on {}, expected a target starting with {prefix:?}",
        t["name"],
        t["wait"]
    );
}

/// Every live thread that is not flagged is one of the runtime's own idle threads.
#[track_caller]
fn assert_rest_are_runtime(r: &Value) {
    for t in live_threads(r) {
        if t["flagged"] == true {
            assert_eq!(
                t["role"],
                "app",
                "a flagged thread is an app thread\n{}",
                describe(r)
            );
        } else {
            assert_eq!(
                t["role"],
                "runtime",
                "tid {} is live, not flagged, yet not a runtime thread\n{}",
                t["tid"],
                describe(r)
            );
            assert!(
                t["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "runtime thread {} without a reason",
                t["tid"]
            );
        }
    }
}

// ---------------------------------------------------------------- C: failure 1

#[test]
fn c_handler_blocked_in_read_is_flagged_blocked() {
    let (run, r) = run_c("handler_blocked");
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "native");
    assert_flagged_exactly(&r, &["event-loop"]);
    let t = flagged_thread(&r, "event-loop");
    assert_eq!(t["state"], "blocked", "{}", describe(&r));
    assert_eq!(t["syscall"], "read");
    assert_eq!(t["wait"]["kind"], "fd");
    assert_wait_target(t, "socket:[");
    assert_frame(t, "fetch_reply", "handler_blocked.c");
    assert_frame(t, "run_task", "handler_blocked.c");
    assert_frame(t, "event_loop", "handler_blocked.c");
    // The SIGTERM handler ran on this thread and the kernel restarted the read (SA_RESTART):
    // the program never got control back, so this is not "woke up and went back to waiting".
    assert_reason(t, "blocked in read", &["fetch_reply"]);
    assert_eq!(t["woke_after_signal"], 0, "{}", describe(&r));
}

#[test]
fn c_handler_spinning_is_flagged_spinning() {
    let (run, r) = run_c("handler_spin");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["event-loop"]);
    let t = flagged_thread(&r, "event-loop");
    assert_eq!(t["state"], "running", "{}", describe(&r));
    assert_reason(t, "spinning", &["spin_until_done"]);
    assert_seen_at(t, "spin_until_done");
    assert_seen_at(t, "run_task");
    assert!(
        t["cpu_ms"].as_u64().unwrap_or(0) >= 100,
        "a spinning thread uses CPU: cpu_ms {}",
        t["cpu_ms"]
    );
}

// ---------------------------------------------------------------- C: failure 2

#[test]
fn c_wake_raced_by_timer_work_is_flagged_woke() {
    let (run, r) = run_c("wake_raced");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["server"]);
    let t = flagged_thread(&r, "server");
    // A 20 ms timer for 2 s of grace: dozens of wakes, not one or two.
    let woke = t["woke_after_signal"].as_u64().unwrap_or(0);
    assert!(woke >= 10, "woke_after_signal {woke}\n{}", describe(&r));
    // Whatever the thread was doing at the very last look (almost always back in epoll_wait,
    // sometimes just woken and runnable), what kept it alive is the same: it keeps waking up.
    assert_reason(t, "woke", &["serve_events"]);
    if t["state"] == "blocked" {
        assert_eq!(t["syscall"], "epoll_wait");
        assert_wait_target(t, "anon_inode:[eventpoll]");
    }
    assert_seen_at(t, "serve_events");
    let wakes = t["blocks"]["epoll_wait"]["count"].as_u64().unwrap_or(0);
    assert!(
        wakes >= woke / 2,
        "epoll_wait calls {wakes}: {}",
        t["blocks"]
    );
}

// ---------------------------------------------------------------- C: failure 3

#[test]
fn c_pool_dispatcher_left_alone_is_flagged_blocked_in_futex() {
    let (run, r) = run_c("producer_alone");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["dispatcher"]);
    let t = flagged_thread(&r, "dispatcher");
    assert_eq!(t["state"], "blocked", "{}", describe(&r));
    assert_eq!(t["syscall"], "futex");
    assert_eq!(t["wait"]["kind"], "futex");
    assert_reason(t, "blocked in futex", &["never woke up", "queue_submit"]);
    assert_frame(t, "queue_submit", "producer_alone.c");
    assert_frame(t, "dispatch_jobs", "producer_alone.c");
    // The signal thread is gone after the signal: listed as exited, not flagged. (The workers
    // are gone too; they lived a millisecond, so their names are not checked.)
    let sw = thread(&r, "sig-watch");
    assert_eq!(sw["state"], "exited", "{}", describe(&r));
    assert!(
        sw["exited_after_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "sig-watch exited after the signal: {sw}"
    );
    assert_eq!(
        threads(&r)
            .iter()
            .filter(|t| t["state"] == "exited")
            .count(),
        3,
        "{}",
        describe(&r)
    );
}

#[test]
fn c_pipe_producer_left_alone_is_flagged_asleep_in_write() {
    let (run, r) = run_c("pipe_producer");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["producer"]);
    let t = flagged_thread(&r, "producer");
    // write() is not a probed call: still flagged, as asleep in it.
    assert_eq!(t["state"], "sleeping", "{}", describe(&r));
    assert_eq!(t["syscall"], "write");
    assert_eq!(t["wait"]["kind"], "fd");
    assert_wait_target(t, "pipe:[");
    assert_reason(t, "asleep in write", &["write_record"]);
    assert_frame(t, "write_record", "pipe_producer.c");
    assert_frame(t, "produce_records", "pipe_producer.c");
}

// ---------------------------------------------------------------- C: failure 4

#[test]
fn c_lock_order_deadlock_flags_both_lockers_and_the_joining_main() {
    let (run, r) = run_c("deadlock");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["locker-a", "locker-b", "main"]);
    let mut addrs = Vec::new();
    for (name, func) in [("locker-a", "locker_a"), ("locker-b", "locker_b")] {
        let t = flagged_thread(&r, name);
        assert_eq!(t["state"], "blocked", "{name}\n{}", describe(&r));
        assert_eq!(t["syscall"], "futex", "{name}");
        // A lock-order deadlock is named as such, with the mutex's owner.
        assert_reason(
            t,
            "deadlocked (2 threads): blocked in futex",
            &["never woke up", "take_second_lock", "held by tid"],
        );
        assert_frame(t, "take_second_lock", "deadlock.c");
        assert_frame(t, func, "deadlock.c");
        addrs.push(t["wait"]["addr"].as_str().unwrap_or("").to_string());
    }
    assert_ne!(addrs[0], addrs[1], "each locker waits on a different mutex");
    let cycles = r["deadlocks"].as_array().expect("deadlocks");
    assert_eq!(cycles.len(), 1, "{}", r["deadlocks"]);
    let mut in_cycle: Vec<&str> = cycles[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    in_cycle.sort();
    assert_eq!(in_cycle, ["locker-a", "locker-b"]);
    let main = flagged_thread(&r, "main");
    assert_eq!(main["syscall"], "futex");
    assert_reason(main, "blocked", &["futex", "shutdown_and_join"]);
    assert_frame(main, "shutdown_and_join", "deadlock.c");
}

#[test]
fn c_join_of_a_thread_that_never_ends_flags_main_and_the_worker() {
    let (run, r) = run_c("join_forever");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["main", "worker"]);
    let main = flagged_thread(&r, "main");
    assert_eq!(main["state"], "blocked", "{}", describe(&r));
    assert_eq!(main["syscall"], "futex");
    assert_reason(main, "blocked", &["futex", "stop_and_join"]);
    assert_frame(main, "stop_and_join", "join_forever.c");
    let worker = flagged_thread(&r, "worker");
    assert_eq!(worker["state"], "sleeping", "{}", describe(&r));
    assert_eq!(worker["syscall"], "clock_nanosleep");
    assert_reason(worker, "asleep in clock_nanosleep", &["wait_for_job"]);
    assert_frame(worker, "wait_for_job", "join_forever.c");
}

// ---------------------------------------------------------------- C: controls

#[test]
fn c_clean_shutdown_is_clean() {
    let (run, r) = run_c("clean_shutdown");
    assert_clean(&run, &r);
    assert_eq!(r["target"]["exit_code"], 0, "{}", r["target"]);
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
fn c_epoll_waiters_woken_by_the_signal_are_clean() {
    let (run, r) = run_c("epoll_woken");
    assert_clean(&run, &r);
    assert_eq!(r["target"]["exit_code"], 0, "{}", r["target"]);
    for name in ["poller-0", "poller-1"] {
        let t = thread(&r, name);
        assert_eq!(t["state"], "exited", "{name}\n{}", describe(&r));
        // They sat in epoll_wait from start to signal: one long wait each.
        let max = t["blocks"]["epoll_wait"]["max_ms"].as_f64().unwrap_or(0.0);
        assert!(
            max >= 1000.0,
            "{name} epoll_wait max {max} ms: {}",
            t["blocks"]
        );
    }
}

#[test]
fn reports_list_each_thread_once() {
    for name in ["clean_shutdown", "producer_alone"] {
        let (_run, r) = run_c(name);
        let mut tids: Vec<u64> = threads(&r)
            .iter()
            .filter_map(|t| t["tid"].as_u64())
            .collect();
        let all = tids.len();
        tids.sort();
        tids.dedup();
        assert_eq!(
            tids.len(),
            all,
            "{name}: a tid listed twice\n{}",
            describe(&r)
        );
    }
}

// ---------------------------------------------------------------- Rust

#[test]
fn rust_sync_channel_producer_left_alone_after_consumer_panic() {
    let (run, r) = run_rust("chan_producer");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["producer"]);
    let t = flagged_thread(&r, "producer");
    assert_eq!(t["state"], "blocked", "{}", describe(&r));
    assert_eq!(t["syscall"], "futex");
    // The reason points at the program's own code, not at std's futex wrapper.
    assert_reason(
        t,
        "blocked in futex",
        &["never woke up", "chan_producer::produce"],
    );
    assert_frame(t, "chan_producer::produce", "chan_producer.rs");
    assert_frame(t, "chan_producer::main", "chan_producer.rs");
    // "consumer" (panicked after a millisecond: its name is not checked) and "sig-watch" are gone.
    assert_eq!(
        thread(&r, "sig-watch")["state"],
        "exited",
        "{}",
        describe(&r)
    );
}

#[test]
fn rust_mutex_lock_order_deadlock() {
    let (run, r) = run_rust("mutex_deadlock");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["locker-a", "locker-b", "main"]);
    for (name, func) in [
        ("locker-a", "mutex_deadlock::transfer_a_to_b"),
        ("locker-b", "mutex_deadlock::transfer_b_to_a"),
    ] {
        let t = flagged_thread(&r, name);
        assert_eq!(t["state"], "blocked", "{name}\n{}", describe(&r));
        assert_eq!(t["syscall"], "futex", "{name}");
        // The reason points at the program's own code, not at std's futex wrapper.
        assert_reason(
            t,
            "blocked in futex",
            &["never woke up", "mutex_deadlock::take_second"],
        );
        assert_frame(t, "mutex_deadlock::take_second", "mutex_deadlock.rs");
        assert_frame(t, func, "mutex_deadlock.rs");
    }
    let main = flagged_thread(&r, "main");
    assert_eq!(main["syscall"], "futex");
    assert_reason(
        main,
        "blocked",
        &["futex", "mutex_deadlock::shutdown_and_join"],
    );
    assert_frame(
        main,
        "mutex_deadlock::shutdown_and_join",
        "mutex_deadlock.rs",
    );
    assert_frame(main, "mutex_deadlock::main", "mutex_deadlock.rs");
}

#[test]
fn tokio_blocking_read_inside_select_flags_only_that_worker() {
    let (run, r) = run_rust("tokio_select");
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "tokio");
    // One worker is stuck in a std read inside the select!; the other worker and main (parked
    // in block_on, waiting for the task) are the runtime's own idle threads.
    assert_flagged_exactly(&r, &["tokio-rt-worker"]);
    let t = flagged_thread(&r, "tokio-rt-worker");
    assert_eq!(t["state"], "blocked", "{}", describe(&r));
    assert_eq!(t["syscall"], "recvfrom");
    assert_wait_target(t, "socket:[");
    // The reason points at the program's own code, not at std's socket wrapper.
    assert_reason(
        t,
        "blocked in recvfrom",
        &["never woke up", "tokio_select::refresh_from_peer"],
    );
    assert_frame(t, "tokio_select::refresh_from_peer", "tokio_select.rs");
    assert_rest_are_runtime(&r);
}

// ---------------------------------------------------------------- Python

#[test]
fn python_queue_producer_left_alone() {
    let (run, r) = run_python("queue_producer");
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "cpython");
    assert_flagged_exactly(&r, &["main", "producer"]);
    let p = flagged_thread(&r, "producer");
    assert_eq!(p["state"], "blocked", "{}", describe(&r));
    assert_eq!(p["syscall"], "futex");
    assert_reason(p, "blocked in futex", &["never woke up"]);
    assert!(
        p["stack"].as_array().is_some_and(|s| !s.is_empty()),
        "the producer has a native stack\n{}",
        describe(&r)
    );
    let main = flagged_thread(&r, "main");
    assert_eq!(main["syscall"], "futex");
    assert_reason(main, "blocked", &["futex"]);
}

#[test]
fn python_handler_blocked_in_socket_recv() {
    let (run, r) = run_python("handler_recv");
    assert_stalled(&run, &r);
    assert_flagged_exactly(&r, &["handler", "main"]);
    let h = flagged_thread(&r, "handler");
    assert_eq!(h["state"], "blocked", "{}", describe(&r));
    assert_eq!(h["syscall"], "recvfrom");
    assert_eq!(h["wait"]["kind"], "fd");
    assert_wait_target(h, "socket:[");
    assert_reason(h, "blocked in recvfrom", &["never woke up"]);
    let main = flagged_thread(&r, "main");
    assert_eq!(main["syscall"], "futex");
    assert_reason(main, "blocked", &["futex"]);
}

// ---------------------------------------------------------------- Go

#[test]
fn go_goroutines_stuck_on_channels_flag_no_os_thread() {
    let (run, r) = run_go("chan_stuck");
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "go");
    assert_flagged_exactly(&r, &[]);
    let live = live_threads(&r);
    assert!(
        live.len() >= 2,
        "the Go runtime has several threads\n{}",
        describe(&r)
    );
    assert_rest_are_runtime(&r);
    // The stall is at the goroutine level: the summary names the goroutines (issue 11 replaced
    // the advice to dump them with `kill -QUIT`).
    let summary = r["summary"].to_string();
    assert!(
        summary.contains("(main.produce): blocked in chan send"),
        "summary {summary}"
    );
    assert!(!summary.contains("kill -QUIT"), "summary {summary}");
}

#[test]
fn go_goroutine_in_a_blocking_read_flags_its_os_thread() {
    let (run, r) = run_go("read_stuck");
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "go");
    // Go cannot name threads: every thread has the program's name.
    assert_flagged_exactly(&r, &["read_stuck"]);
    let t = flagged_thread(&r, "read_stuck");
    assert_eq!(t["role"], "app");
    assert_eq!(t["state"], "blocked", "{}", describe(&r));
    assert_eq!(t["syscall"], "read");
    assert_wait_target(t, "pipe:[");
    // The reason points at the program's own code, not at the runtime's syscall stub.
    assert_reason(t, "blocked in read", &["never woke up", "main.readCommand"]);
    assert_frame(t, "main.readCommand", "read_stuck.go");
    assert_frame(t, "main.worker", "read_stuck.go");
    assert_rest_are_runtime(&r);
}

/// `run --timeout`: a command that finishes in time keeps its own exit code; one that hangs
/// gets the stop signal, the grace period and the verdict.
#[test]
fn run_timeout_passes_through_or_judges() {
    require_root();
    let finished = stallprobe(
        &[
            "run",
            "--timeout",
            "30s",
            "--format",
            "json",
            "--quiet",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        finished.code, 3,
        "the command's own exit code:\n{}",
        finished.stderr
    );
    assert_eq!(finished.json()["verdict"], "observed");

    let bin = build_c("deadlock");
    let hung = stallprobe(
        &[
            "run",
            "--timeout",
            "1s",
            "--grace",
            "1s",
            "--format",
            "json",
            "--quiet",
            "--",
            bin.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(hung.code, 1, "{}", hung.stderr);
    let r = hung.json();
    assert_eq!(r["verdict"], "stalled");
    assert_eq!(r["shutdown"]["signal"], "SIGTERM");
}
