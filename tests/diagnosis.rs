//! Why is it blocked: lock owners, deadlock cycles, runtime-aware roles, JIT frames.
//! Real workloads (C, Java, Node.js), the real stallprobe, the real kernel.

use std::{process::Command, time::Duration};

use stallprobe_tests::*;

const RUN: Duration = Duration::from_secs(120);

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

fn attach(pid: u32, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec![
        "--pid",
        pid.as_str(),
        "--duration",
        "2s",
        "--format",
        "json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let run = stallprobe(&args, RUN);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json()
}

#[test]
fn pthread_mutex_deadlock_is_a_cycle_naming_both_threads_and_both_mutexes() {
    require_root();
    let w = Workload::start(
        &mut Command::new(build_c("foundation")),
        Duration::from_secs(20),
    );
    let r = attach(w.pid(), &[]);
    let d = r["deadlocks"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{}", r["deadlocks"]);
    let names: Vec<&str> = d[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"locker-a") && names.contains(&"locker-b") && names.len() == 2,
        "{names:?}"
    );
    let mut addrs: Vec<u64> = d[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| hex(o["addr"].as_str().unwrap()))
        .collect();
    addrs.sort();
    let mut want = vec![hex(w.fact("mutex_a")), hex(w.fact("mutex_b"))];
    want.sort();
    assert_eq!(addrs, want);
    for o in d[0]["objects"].as_array().unwrap() {
        assert_eq!(o["kind"], "pthread_mutex");
    }
    // Each locker's wait names the owner.
    let a = thread(&r, "locker-a");
    let b_tid = thread(&r, "locker-b")["tid"].clone();
    assert_eq!(a["wait"]["owner"], b_tid);
    assert_eq!(a["wait"]["owner_name"], "locker-b");
    assert_eq!(a["wait"]["object"], "pthread_mutex");
    // The main thread joins locker-a: a join, not part of the cycle.
    let main = thread(&r, "foundation");
    assert_eq!(main["wait"]["object"], "thread_join");
    assert_eq!(main["wait"]["owner_name"], "locker-a");
    assert!(
        r["summary"].to_string().contains("deadlock: "),
        "{}",
        r["summary"]
    );
}

#[test]
fn three_thread_lock_cycle_without_the_bystander() {
    require_root();
    let w = Workload::start(
        Command::new(build_c("lock_cycle3")).arg("--ready"),
        Duration::from_secs(20),
    );
    let r = attach(w.pid(), &[]);
    let d = r["deadlocks"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{}", r["deadlocks"]);
    let mut names: Vec<&str> = d[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cycle-1", "cycle-2", "cycle-3"]);
    let mut addrs: Vec<u64> = d[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| hex(o["addr"].as_str().unwrap()))
        .collect();
    addrs.sort();
    let mut want: Vec<u64> = ["m1", "m2", "m3"].iter().map(|k| hex(w.fact(k))).collect();
    want.sort();
    assert_eq!(addrs, want);
    // The bystander waits for m1, held by cycle-1, and is named as such.
    let by = thread(&r, "bystander");
    assert_eq!(by["wait"]["owner_name"], "cycle-1");
}

#[test]
fn pi_mutex_owner_comes_from_the_futex_word() {
    require_root();
    let w = Workload::start(
        Command::new(build_c("pi_mutex")).arg("--ready"),
        Duration::from_secs(20),
    );
    let r = attach(w.pid(), &[]);
    let t = thread(&r, "waiter");
    assert_eq!(t["syscall"], "futex");
    assert!(
        t["wait"]["op"]
            .as_str()
            .unwrap()
            .starts_with("FUTEX_LOCK_PI"),
        "{}",
        t["wait"]
    );
    assert_eq!(t["wait"]["object"], "pi_mutex");
    assert_eq!(
        hex(t["wait"]["addr"].as_str().unwrap()),
        hex(w.fact("mutex"))
    );
    assert_eq!(
        t["wait"]["owner"].as_u64().unwrap().to_string(),
        w.fact("holder_tid")
    );
    assert_eq!(t["wait"]["owner_name"], "holder");
    assert_frame(t, "lock_pi_mutex", "pi_mutex.c");
}

#[test]
fn jvm_monitor_deadlock_and_blocked_shutdown_hook() {
    require_root();
    let run = run_jvm_deadlock(&[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["target"]["runtime"], "jvm");
    assert_eq!(r["verdict"], "stalled");
    assert_eq!(flagged_names(&r), ["locker-a", "locker-b", "shutdown-hook"]);
    for name in ["locker-a", "locker-b", "shutdown-hook"] {
        let t = thread(&r, name);
        assert_eq!(t["role"], "app", "{name}");
        assert_eq!(t["syscall"], "futex", "{name}");
    }
    // The lockers wait to enter a Java monitor (synchronized), as their stacks show.
    assert_eq!(thread(&r, "locker-a")["wait"]["object"], "java_monitor");
    for name in [
        "GC Thread#0",
        "VM Thread",
        "C2 CompilerThre",
        "C1 CompilerThre",
        "Signal Dispatch",
        "Finalizer",
        "Reference Handl",
    ] {
        let t = thread(&r, name);
        assert_eq!(t["role"], "runtime", "{name}: {}", t["reason"]);
        assert_eq!(t["flagged"], false, "{name}");
    }
    // Judged stalled, the JVM was asked for its threads (tests/runtimes.rs has the details):
    // no JIT frame is left unnamed.
    assert!(
        !r["notes"].to_string().contains("JIT frames unsymbolized"),
        "{}",
        r["notes"]
    );
}

fn node_roles(extra_node_args: &[&str]) -> Value {
    require_root();
    let mut cmd = Command::new("node");
    cmd.args(extra_node_args)
        .arg(node_script("atomics_wait"))
        .arg("--ready")
        .current_dir("/tmp");
    let w = Workload::start(&mut cmd, Duration::from_secs(30));
    attach(w.pid(), &[])
}

#[test]
fn node_worker_in_atomics_wait_is_app_and_the_rest_runtime() {
    let r = node_roles(&[]);
    assert_eq!(r["target"]["runtime"], "node");
    let app: Vec<&Value> = threads(&r).iter().filter(|t| t["role"] == "app").collect();
    assert_eq!(
        app.len(),
        1,
        "only the worker is an app thread: {:?}",
        threads(&r)
            .iter()
            .map(|t| (&t["tid"], &t["role"], &t["reason"]))
            .collect::<Vec<_>>()
    );
    let worker = app[0];
    assert_eq!(worker["syscall"], "futex");
    assert_eq!(worker["wait"]["object"], "js_atomics_wait");
    assert!(
        stack_functions(worker)
            .iter()
            .any(|f| f.contains("AtomicsWait")),
        "{:?}",
        stack_functions(worker)
    );
    // The event loop is idle in epoll, and the rest are V8/libuv workers.
    assert!(threads(&r).iter().any(|t| {
        t["role"] == "runtime"
            && t["syscall"]
                .as_str()
                .is_some_and(|s| s.starts_with("epoll"))
    }));
    // Without a perf map, the report says how to name the JavaScript frames.
    assert!(
        r["notes"].to_string().contains("--perf-basic-prof"),
        "{}",
        r["notes"]
    );
}

#[test]
fn node_with_a_perf_map_names_the_javascript_function() {
    let r = node_roles(&["--perf-basic-prof", "--interpreted-frames-native-stack"]);
    let worker = threads(&r)
        .iter()
        .find(|t| t["role"] == "app")
        .expect("the worker");
    let funcs = stack_functions(worker);
    assert!(
        funcs.iter().any(|f| f.contains("parkForever")),
        "JS frame from /tmp/perf-PID.map: {funcs:?}"
    );
    assert!(
        !r["notes"].to_string().contains("--perf-basic-prof"),
        "{}",
        r["notes"]
    );
}

#[test]
fn fd_waits_name_the_tcp_peer_and_the_pipe_end_holder() {
    require_root();
    let w = Workload::start(
        Command::new(build_c("tcp_and_pipe")).arg("--ready"),
        Duration::from_secs(20),
    );
    let r = attach(w.pid(), &[]);
    let tcp = thread(&r, "tcp-client");
    assert_eq!(tcp["syscall"], "recvfrom");
    let o = &tcp["wait"]["object"];
    assert_eq!(o["type"], "socket", "{}", tcp["wait"]);
    assert_eq!(o["proto"], "tcp");
    assert_eq!(o["state"], "ESTABLISHED");
    assert_eq!(o["remote"], format!("127.0.0.1:{}", w.fact("server_port")));
    assert_eq!(o["local"], format!("127.0.0.1:{}", w.fact("client_port")));
    let holders = o["peer"]["holders"].as_array().expect("the peer's holders");
    assert!(
        holders
            .iter()
            .any(|h| h["pid"].as_u64().unwrap().to_string() == w.fact("server_pid")),
        "the server process holds the other end: {o}"
    );
    // The text form names the peer too.
    assert!(tcp["reason"].is_null(), "no shutdown, no verdict");
    let pipe = thread(&r, "pipe-reader");
    assert_eq!(pipe["syscall"], "read");
    let p = &pipe["wait"]["object"];
    assert_eq!(p["type"], "pipe", "{}", pipe["wait"]);
    let writer = p["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["end"] == "write")
        .unwrap_or_else(|| panic!("the write end's holder: {p}"));
    assert_eq!(
        writer["pid"].as_u64().unwrap(),
        w.pid() as u64,
        "leaked in the process itself"
    );
    assert_eq!(
        writer["fd"].as_u64().unwrap().to_string(),
        w.fact("pipe_write_fd")
    );
}
