//! Go services that do not shut down, seen goroutine by goroutine: stallprobe reads the
//! goroutines from the target's memory (no signal, no ptrace stop) and flags the application
//! goroutines still there after the grace period, grouped, with the wait reason as the target's
//! Go version spells it and the source line of the blocking statement.
//!
//! Every leak of the workloads in tests/workloads/go (and the clean control) on Go 1.19, 1.23
//! and 1.27, each built plain, stripped (`-s -w`) and PIE; and through `--pid` + `kill -TERM`.

use std::{collections::HashMap, time::Duration};

use stallprobe_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const MODES: [GoBuild; 3] = [GoBuild::Plain, GoBuild::Stripped, GoBuild::Pie];

/// `key=value` lines a workload printed (with `--ready`) on stdout.
fn facts(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// How the wait reasons of `sync` are spelled in a Go version: a plain "semacquire" until the
/// runtime named them (sync.Mutex.Lock from Go 1.20, sync.WaitGroup.Wait from Go 1.25).
fn sync_reason(version: &str, what: &str) -> String {
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    let named_from = if what == "sync.WaitGroup.Wait" {
        25
    } else {
        20
    };
    if minor < named_from {
        "semacquire".into()
    } else {
        what.into()
    }
}

/// The group whose stack has `function` (at `line`, when given), flagged.
#[track_caller]
fn flagged_group<'a>(r: &'a Value, function: &str, line: Option<u32>) -> &'a Value {
    let found: Vec<&Value> = goroutine_groups(r)
        .iter()
        .filter(|g| g["flagged"] == true)
        .filter(|g| {
            g["stack"].as_array().into_iter().flatten().any(|f| {
                f["function"] == function
                    && line.is_none_or(|l| f["line"].as_u64() == Some(l as u64))
            })
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one flagged group in {function} (line {line:?})\n{}",
        describe_goroutines(r)
    );
    found[0]
}

/// Exactly `n` groups are flagged, all of the application.
#[track_caller]
fn flagged_groups(r: &Value, n: usize) {
    let flagged: Vec<&Value> = goroutine_groups(r)
        .iter()
        .filter(|g| g["flagged"] == true)
        .collect();
    assert_eq!(
        flagged.len(),
        n,
        "flagged groups\n{}",
        describe_goroutines(r)
    );
    assert!(
        flagged.iter().all(|g| g["role"] == "app"),
        "no runtime goroutine is flagged\n{}",
        describe_goroutines(r)
    );
    assert!(
        goroutine_groups(r)
            .iter()
            .filter(|g| g["role"] == "runtime")
            .all(|g| g["flagged"] == false),
        "{}",
        describe_goroutines(r)
    );
}

/// `main.main` is flagged, waiting in wg.Wait() after the signal.
#[track_caller]
fn main_in_wg_wait(r: &Value, version: &str) {
    let g = flagged_group(r, "main.main", None);
    assert_eq!(g["count"], 1);
    assert_eq!(
        g["wait_reason"].as_str(),
        Some(sync_reason(version, "sync.WaitGroup.Wait").as_str()),
        "{g}"
    );
    assert!(
        stack_functions(g).iter().any(|f| f.contains("WaitGroup")),
        "{g}"
    );
}

/// The group blocked in a channel operation at the workload's blocking line, with the
/// channel's state and the `go` statement that created it.
#[track_caller]
fn chan_leak(r: &Value, f: &HashMap<String, String>, function: &str, file: &str) -> Value {
    let line: u32 = f["blocking_line"].parse().unwrap();
    let g = flagged_group(r, function, Some(line)).clone();
    assert_eq!(g["wait_reason"], "chan send", "{g}");
    assert_eq!(g["state"], "waiting");
    let reason = g["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("blocked in chan send at ")
            && reason.contains(&format!("{file}:{line}"))
            && reason.contains("since before SIGTERM")
            && reason.contains("no goroutine receives from it"),
        "{reason}"
    );
    let created = &g["created_by"];
    assert_eq!(created["function"], "main.main", "{g}");
    assert_eq!(
        created["line"].as_u64(),
        Some(f["go_line"].parse::<u64>().unwrap()),
        "{g}"
    );
    assert!(g["waiting_ms"].as_u64().unwrap() >= 1000, "{g}");
    g
}

/// One goroutine of a group, from the `goroutines` list.
fn goroutine<'a>(r: &'a Value, goid: &Value) -> &'a Value {
    r["goroutines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["goid"] == *goid)
        .unwrap_or_else(|| panic!("goroutine {goid} not listed"))
}

/// Run one workload under `stallprobe run` (stop after 2 s, grace 2 s) and check its verdict.
fn check(workload: &str, version: &str, how: GoBuild) {
    let bin = build_go_with(workload, version, how);
    let tag = format!("go-{workload}-{version}-{how:?}");
    let (run, r) = run_and_stop(
        &tag,
        &[bin.to_str().unwrap(), "--ready"],
        "2s",
        "2s",
        RUN_TIMEOUT,
    );
    let f = facts(&run.stdout);
    let ctx = format!("{workload} go{version} {how:?}");
    // The runtime's idle threads (Ms parked in futex) make no live lines.
    let runtime_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("in futex") || l.contains("slow futex"))
        .collect();
    assert!(runtime_lines.is_empty(), "{ctx}: {runtime_lines:#?}");
    if workload == "clean_ctx" {
        assert_clean(&run, &r);
        return;
    }
    assert_stalled(&run, &r);
    assert_eq!(r["target"]["runtime"], "go", "{ctx}");
    assert_eq!(
        r["target"]["go_version"]
            .as_str()
            .map(|v| v.starts_with(&format!("go{version}"))),
        Some(true),
        "{ctx}: {}",
        r["target"]
    );
    let file = format!("{workload}.go");
    match workload {
        "select_send" => {
            flagged_groups(&r, 2);
            let g = chan_leak(&r, &f, "main.worker", &file);
            let one = goroutine(&r, &g["goids"][0]);
            assert_eq!(one["wait"]["kind"], "chan");
            assert_eq!(one["wait"]["cap"], 0);
            assert_eq!(one["wait"]["receivers"], 0);
            assert_eq!(one["flagged"], true);
            assert!(one["waiting_since"].is_string(), "{one}");
            main_in_wg_wait(&r, version);
        }
        "producer_gone" => {
            flagged_groups(&r, 2);
            let g = chan_leak(&r, &f, "main.produce", &file);
            let one = goroutine(&r, &g["goids"][0]);
            assert_eq!(
                (&one["wait"]["cap"], &one["wait"]["len"]),
                (&4.into(), &4.into())
            );
            main_in_wg_wait(&r, version);
        }
        "pool_gone" => {
            flagged_groups(&r, 2);
            let g = chan_leak(&r, &f, "main.submit", &file);
            let n: u64 = f["submitters"].parse().unwrap();
            assert!(g["count"].as_u64().unwrap() >= n, "one group of {n}: {g}");
            assert!(
                r["summary"].as_array().unwrap().iter().any(|l| l
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{} goroutines (main.submit)", g["count"]))),
                "the summary has one line for the group: {}",
                r["summary"]
            );
            main_in_wg_wait(&r, version);
        }
        "mutex_abba" => {
            flagged_groups(&r, 3);
            for (func, key) in [("main.lockAB", "ab_line"), ("main.lockBA", "ba_line")] {
                let line: u32 = f[key].parse().unwrap();
                let g = flagged_group(&r, func, Some(line));
                assert_eq!(
                    g["wait_reason"].as_str(),
                    Some(sync_reason(version, "sync.Mutex.Lock").as_str()),
                    "{g}"
                );
                assert!(
                    g["reason"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("{file}:{line}")),
                    "{g}"
                );
            }
            main_in_wg_wait(&r, version);
        }
        "wg_wait" => {
            flagged_groups(&r, 2);
            let line: u32 = f["blocking_line"].parse().unwrap();
            let g = flagged_group(&r, "main.readLine", Some(line));
            assert_eq!(g["state"], "syscall", "{g}");
            let one = goroutine(&r, &g["goids"][0]);
            // In a read on the pipe: on an OS thread of the target, whose wait the thread view
            // describes.
            let tid = one["thread"]
                .as_u64()
                .unwrap_or_else(|| panic!("no thread: {one}"));
            assert!(
                threads(&r).iter().any(|t| t["tid"].as_u64() == Some(tid)),
                "thread {tid} is one of the target's"
            );
            assert_eq!(one["wait"]["kind"], "thread", "{one}");
            assert_eq!(one["wait"]["syscall"], "read", "{one}");
            let pipe = one["wait"]["wait"]["target"].as_str().unwrap_or("");
            assert!(pipe.starts_with("pipe:["), "{one}");
            main_in_wg_wait(&r, version);
        }
        other => panic!("no check for {other}"),
    }
}

const WORKLOADS: [&str; 6] = [
    "select_send",
    "producer_gone",
    "pool_gone",
    "mutex_abba",
    "wg_wait",
    "clean_ctx",
];

fn every_workload(version: &str) {
    require_root();
    for how in MODES {
        for w in WORKLOADS {
            check(w, version, how);
        }
    }
}

#[test]
fn go_1_19_leaks_plain_stripped_pie() {
    every_workload("1.19");
}

#[test]
fn go_1_23_leaks_plain_stripped_pie() {
    every_workload("1.23.9");
}

#[test]
fn go_1_27_leaks_plain_stripped_pie() {
    every_workload("1.27.3");
}

/// The same verdicts when stallprobe attaches to a running service and someone else sends the
/// stop signal (`kill -TERM`).
#[test]
fn attach_with_pid_and_kill_term() {
    require_root();
    for w in WORKLOADS {
        let bin = build_go_with(w, "1.23.9", GoBuild::Plain);
        let work = Workload::start(
            std::process::Command::new(bin).arg("--ready"),
            Duration::from_secs(30),
        );
        let (run, r) = attach_and_stop(
            &format!("go-attach-{w}"),
            &work,
            "2s",
            Duration::from_millis(1500),
            RUN_TIMEOUT,
        );
        if w == "clean_ctx" {
            assert_clean(&run, &r);
            continue;
        }
        assert_stalled(&run, &r);
        let expected = match w {
            "mutex_abba" => 3,
            _ => 2,
        };
        flagged_groups(&r, expected);
        let (func, key) = match w {
            "select_send" => ("main.worker", "blocking_line"),
            "producer_gone" => ("main.produce", "blocking_line"),
            "pool_gone" => ("main.submit", "blocking_line"),
            "mutex_abba" => ("main.lockAB", "ab_line"),
            _ => ("main.readLine", "blocking_line"),
        };
        let line: u32 = work.fact(key).parse().unwrap();
        let g = flagged_group(&r, func, Some(line));
        // Attached before the signal, which it saw coming: blocked since before it.
        assert!(
            g["reason"]
                .as_str()
                .unwrap()
                .contains("since before SIGTERM"),
            "{w}: {g}"
        );
        main_in_wg_wait(&r, "1.23.9");
    }
}
