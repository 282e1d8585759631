//! The report's outputs. Each format is a pure function of the [`Report`] (the GitHub
//! annotations also take the workspace root): no clock, no environment, no file system;
//! [`outputs`] decides which ones run and where they go.
//!
//! - [`text`]: the report for people (`--format text`), and [`live`]: the lines printed while
//!   a watch runs; [`outputs::json`]: `--format json`;
//! - [`junit`]: JUnit XML, one failing test case per flagged thread (`--junit`);
//! - [`markdown`]: a Markdown summary for a CI job page (`--summary`, `$GITHUB_STEP_SUMMARY`);
//! - [`annotations`]: GitHub Actions `::error` workflow commands at the application line where
//!   each flagged thread waits (when `GITHUB_ACTIONS=true`);
//! - [`folded`]: folded stacks weighted by blocked time (`--format folded`), for
//!   flamegraph.pl, inferno and speedscope;
//! - [`flamegraph`]: an off-CPU flame graph SVG of those stacks (`--flamegraph`);
//! - [`pprof`]: the pprof protobuf, gzip'ed (`--pprof`), for `go tool pprof` and friends.
//!
//! # Which threads, which stack, what weight
//!
//! The profile-like exports (folded, flame graph, pprof) share [`weight_ms`] and
//! [`profile_stack`]:
//!
//! - a thread **blocked** in a probed call or **sleeping** in another one weighs its
//!   `blocked_ms` (how long it has been asleep in that call at the end of the session);
//! - a **flagged** thread weighs at least 1 ms, so that a thread that kept the process alive
//!   while running on a CPU (no blocked time) still shows with its stack;
//! - other **running** threads and **exited** threads are left out: they are not blocked now,
//!   and an exited thread's stack is gone (its past block times are in the report's `blocks`
//!   histograms, which have no stacks);
//! - a thread's stack is its user stack, or for a running thread without one, the first sample
//!   of where it ran (`spin_samples`), followed by its kernel stack.
//!
//! So the total of a profile is the sum of the included threads' weights: the sum of
//! `blocked_ms` over blocked and sleeping threads, plus 1 ms per flagged thread that has none.
//!
//! For Go targets the goroutines come on top, one sample per group ([`weighted_groups`]):
//! a waiting group weighs `count × waiting_ms` (every member has been waiting at least that
//! long), a flagged group at least `count` ms; the stack is the goroutine's, under a root
//! frame `goroutines`.

pub mod annotations;
pub mod files;
pub mod flamegraph;
pub mod folded;
pub mod junit;
pub mod live;
pub mod markdown;
pub mod outputs;
pub mod pprof;
pub mod style;
pub mod text;

pub use outputs::OutputOptions;

use crate::report::{Frame, GoroutineGroup, Report, ThreadReport, ThreadState};

/// A thread's weight in the profile-like exports, in ms of blocked time (`None`: left out).
/// See the module documentation.
pub fn weight_ms(t: &ThreadReport) -> Option<u64> {
    let blocked = match t.state {
        ThreadState::Blocked | ThreadState::Sleeping => t.blocked_ms.unwrap_or(0),
        ThreadState::Running | ThreadState::Exited => 0,
    };
    if t.flagged && t.state != ThreadState::Exited {
        Some(blocked.max(1))
    } else if blocked > 0 {
        Some(blocked)
    } else {
        None
    }
}

/// The user stack a profile shows for a thread, innermost frame first: its stack, or for a
/// running thread without one, the first sample of where it ran.
pub fn profile_stack(t: &ThreadReport) -> &[Frame] {
    if t.stack.is_empty()
        && t.state == ThreadState::Running
        && let Some(s) = t.spin_samples.first()
    {
        return s;
    }
    &t.stack
}

/// The threads the profile-like exports include, with their weights, in report order.
pub fn weighted_threads(r: &Report) -> impl Iterator<Item = (&ThreadReport, u64)> {
    r.threads
        .iter()
        .filter_map(|t| weight_ms(t).map(|w| (t, w)))
}

/// The goroutine groups the profile-like exports include, with their weights (see the
/// module documentation).
pub fn weighted_groups(r: &Report) -> impl Iterator<Item = (&GoroutineGroup, u64)> {
    r.goroutine_groups.iter().filter_map(|g| {
        let waited = g.waiting_ms.unwrap_or(0).saturating_mul(g.count);
        let w = if g.flagged {
            waited.max(g.count)
        } else {
            waited
        };
        (w > 0).then_some((g, w))
    })
}

/// The sum of the weights: a profile's total, in ms.
#[cfg(test)]
pub fn total_weight_ms(r: &Report) -> u64 {
    weighted_threads(r).map(|(_, w)| w).sum::<u64>()
        + weighted_groups(r).map(|(_, w)| w).sum::<u64>()
}

/// The report's wait-for cycles that no summary line states already.
pub(crate) fn unstated_deadlocks(r: &Report) -> Vec<String> {
    r.deadlocks
        .iter()
        .map(|d| d.describe())
        .filter(|d| !r.summary.iter().any(|l| l.contains(d.as_str())))
        .collect()
}

/// `function file:line` of one frame for a stack listing (JUnit bodies, Markdown details):
/// full file path, since CI logs are read next to the source tree.
pub(crate) fn frame_listing(i: usize, f: &Frame) -> String {
    format!("#{i:<2} {}", frame_where(f))
}

/// `function file:line [module]` of one frame, without an index (a goroutine's creator).
pub(crate) fn frame_where(f: &Frame) -> String {
    let func = f
        .function
        .clone()
        .unwrap_or_else(|| format!("{:#x}", f.addr));
    let mut s = func;
    match (&f.file, f.line) {
        (Some(file), Some(line)) => s.push_str(&format!("  {file}:{line}")),
        (Some(file), None) => s.push_str(&format!("  {file}")),
        _ => {}
    }
    if let Some(m) = &f.module {
        s.push_str(&format!("  [{}]", crate::report::basename(m)));
    }
    if f.inlined {
        s.push_str(" (inlined)");
    }
    s
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A synthetic report shaped like the `deadlock` workload's (three flagged threads blocked
    //! in futex, one exited, one running), for the exporters' unit tests.

    use crate::report::*;

    pub fn frame(func: &str, file: &str, line: u32, module: &str) -> Frame {
        Frame {
            addr: 0x1000 + line as u64,
            function: Some(func.into()),
            file: (!file.is_empty()).then(|| file.into()),
            line: (line > 0).then_some(line),
            module: Some(module.into()),
            inlined: false,
            offset: None,
            lang: None,
        }
    }

    pub const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    pub const EXE: &str = "/ws/target/workloads/c/deadlock";
    pub const SRC: &str = "/ws/tests/workloads/c/deadlock.c";

    pub fn kernel() -> Vec<KernelFrame> {
        ["futex_do_wait", "futex_wait", "do_syscall_64"]
            .iter()
            .map(|f| KernelFrame {
                addr: 0,
                function: f.to_string(),
                offset: Some(0x46),
            })
            .collect()
    }

    pub fn thread(
        tid: u32,
        name: &str,
        state: ThreadState,
        blocked_ms: Option<u64>,
    ) -> ThreadReport {
        let blocked = state == ThreadState::Blocked;
        ThreadReport {
            syscall: blocked.then(|| "futex".into()),
            blocked_ms,
            blocked_since: blocked_ms.map(|_| BlockedSince::Probe),
            wait: blocked
                .then(|| Wait::futex(0x5555_0000_1120, "FUTEX_WAIT_PRIVATE".into(), None, None)),
            ..ThreadReport::new(100, tid, name.into(), state)
        }
    }

    fn locker(tid: u32, name: &str, func: &str, line: u32) -> ThreadReport {
        let mut t = thread(tid, name, ThreadState::Blocked, Some(4001));
        t.stack = vec![
            Frame {
                inlined: true,
                ..frame(
                    "futex_wait",
                    "./nptl/../sysdeps/nptl/futex-internal.h",
                    146,
                    LIBC,
                )
            },
            frame("__GI___lll_lock_wait", "./nptl/lowlevellock.c", 49, LIBC),
            frame(
                "___pthread_mutex_lock",
                "./nptl/pthread_mutex_lock.c",
                93,
                LIBC,
            ),
            frame("take_second_lock", SRC, 26, EXE),
            frame(func, SRC, line, EXE),
            frame("start_thread", "./nptl/pthread_create.c", 442, LIBC),
            frame("clone3", "", 0, LIBC),
        ];
        // Two frames of one address: the inlined one and its caller.
        t.stack[1].addr = t.stack[0].addr;
        t.kernel_stack = kernel();
        t.flagged = true;
        t.reason = Some(format!(
            "blocked in futex on FUTEX_WAIT_PRIVATE 0x55550000{tid} since before SIGTERM (4s) and never woke up at take_second_lock (deadlock.c:26)"
        ));
        t.blocks.insert(
            "futex".into(),
            CallSummary {
                count: 1,
                total_ms: 1.0,
                p50_ms: 1.0,
                p99_ms: 1.0,
                max_ms: 1.0,
            },
        );
        t
    }

    /// deadlock: main joining locker-a, the two lockers waiting on each other's mutex; plus an
    /// exited helper and a running thread that is not flagged.
    pub fn report() -> Report {
        let mut main = thread(100, "main", ThreadState::Blocked, Some(1995));
        main.stack = vec![
            frame(
                "__futex_abstimed_wait_common",
                "./nptl/futex-internal.c",
                87,
                LIBC,
            ),
            frame(
                "__pthread_clockjoin_ex",
                "./nptl/pthread_join_common.c",
                102,
                LIBC,
            ),
            frame("shutdown_and_join", SRC, 54, EXE),
            frame("main", SRC, 81, EXE),
            frame("_start", "", 0, EXE),
        ];
        main.kernel_stack = kernel();
        main.flagged = true;
        main.reason = Some("blocked joining thread 101 (locker-a), which has not exited".into());
        let mut exited = thread(103, "helper", ThreadState::Exited, None);
        exited.exited_after_ms = Some(2);
        let mut running = thread(104, "ticker", ThreadState::Running, None);
        running.stack = vec![frame("tick", SRC, 90, EXE)];
        Report {
            schema: SCHEMA,
            target: TargetInfo {
                pid: 100,
                comm: "deadlock".into(),
                exe: EXE.into(),
                runtime: Runtime::Native,
                cmdline: vec![EXE.into()],
                exited: false,
                exit_code: None,
                killed_by: None,
                ns_pid: None,
                go_version: None,
            },
            children: Vec::new(),
            verdict: Verdict::Stalled,
            shutdown: Some(ShutdownReport {
                signal: "SIGTERM".into(),
                sender_pid: 99,
                sender_comm: "stallprobe".into(),
                grace_ms: 2000,
                process_exited: false,
                exited_after_ms: None,
                at_ms: 2002,
                ignored: false,
            }),
            summary: vec![
                "stalled: still alive 2s after SIGTERM (from pid 99 stallprobe), grace 2s".into(),
            ],
            threads: vec![
                main,
                locker(101, "locker-a", "locker_a", 35),
                locker(102, "locker-b", "locker_b", 46),
                exited,
                running,
            ],
            goroutines: Vec::new(),
            goroutines_total: None,
            goroutine_groups: Vec::new(),
            deadlocks: Vec::new(),
            slow_calls: Vec::new(),
            slow_calls_total: 0,
            timeline: Vec::new(),
            dropped_events: 0,
            drops: Counters::default(),
            session: SessionInfo {
                stallprobe_version: "0.1.0",
                hook: Hook::Raw,
                threshold_ms: 500.0,
                interval_ms: 250.0,
                watched_ms: 4003,
                peak_rss_kb: 1,
                goroutine_read_ms: None,
                probed_calls: vec!["futex"],
                unprobed_calls: Vec::new(),
            },
            notes: Vec::new(),
        }
    }

    /// A Go target: 2,000 goroutines leaked in a channel send and `main` in wg.Wait() flagged,
    /// a runtime goroutine not.
    pub fn go_report() -> Report {
        let mut r = report();
        r.target.runtime = Runtime::Go;
        r.target.go_version = Some("go1.23.9".into());
        for t in &mut r.threads {
            t.flagged = false;
            t.reason = None;
            t.role = Role::Runtime;
        }
        let gsrc = "/ws/tests/workloads/go/pool_gone.go";
        let gexe = "/ws/target/pool_gone";
        let runtime_frame = |f: &str, line| frame(f, "/usr/lib/go/src/runtime/proc.go", line, gexe);
        let group = |count, goids: Vec<u64>, reason: &str, func: &str, line, flagged| {
            GoroutineGroup {
            pid: 100,
            count,
            goids,
            state: "waiting".into(),
            wait_reason: Some(reason.into()),
            waiting_ms: Some(4000),
            stack: vec![runtime_frame("runtime.gopark", 398), frame(func, gsrc, line, gexe)],
            created_by: Some(frame("main.main", gsrc, 50, gexe)),
            role: if flagged { Role::App } else { Role::Runtime },
            flagged,
            reason: flagged.then(|| format!("blocked in {reason} at {func} (pool_gone.go:{line}) since before SIGTERM (≥ 4s)")),
        }
        };
        r.goroutine_groups = vec![
            group(
                2000,
                (10..20).collect(),
                "chan send",
                "main.submit",
                28,
                true,
            ),
            group(1, vec![1], "semacquire", "main.main", 59, true),
            group(
                1,
                vec![2],
                "force gc (idle)",
                "runtime.forcegchelper",
                300,
                false,
            ),
        ];
        r.goroutines_total = Some(2002);
        r.summary = vec![
            "stalled: still alive 2s after SIGTERM".into(),
            "2000 goroutines (main.submit): blocked in chan send".into(),
        ];
        r
    }

    /// The same target shutting down cleanly: nothing flagged, everything exited.
    pub fn clean_report() -> Report {
        let mut r = report();
        r.verdict = Verdict::Clean;
        r.summary = vec!["clean: exited 12ms after SIGTERM".into()];
        for t in &mut r.threads {
            t.flagged = false;
            t.reason = None;
            t.state = ThreadState::Exited;
            t.blocked_ms = None;
            t.stack.clear();
            t.kernel_stack.clear();
        }
        if let Some(sd) = &mut r.shutdown {
            sd.process_exited = true;
            sd.exited_after_ms = Some(12);
        }
        r.target.exited = true;
        r.target.exit_code = Some(0);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goroutine_groups_go_everywhere_a_report_goes() {
        let r = testutil::go_report();
        // JUnit: a failing case per flagged group.
        let x = junit::junit(&r);
        assert!(x.contains("tests=\"2\" failures=\"2\""), "{x}");
        assert!(
            x.contains("name=\"2000 goroutines main.submit (pool_gone.go:28)\""),
            "{x}"
        );
        assert!(x.contains("created by main.main"), "{x}");
        // Annotations at the goroutine's own line.
        let a = annotations::annotations(&r, &[std::path::PathBuf::from("/ws")]);
        assert!(
            a.iter().any(|l| l.starts_with("::error file=tests/workloads/go/pool_gone.go,line=28,title=stallprobe%3A 2000 goroutines stalled::")),
            "{a:?}"
        );
        // Markdown: the table of flagged goroutines.
        let md = markdown::summary(&r);
        assert!(md.contains("#### Flagged goroutines"), "{md}");
        assert!(
            md.contains(r"| 2000 | chan send | ≥ 4s | main.submit (pool\_gone.go:28) |"),
            "{md}"
        );
        // Folded and pprof: goroutine stacks weighted by waiting time (count × ms).
        let folded = folded::folded(&r);
        assert!(
            folded.contains("goroutines;main.submit;runtime.gopark 8000000"),
            "{folded}"
        );
        assert!(
            folded.contains("goroutines;runtime.forcegchelper;runtime.gopark 4000"),
            "{folded}"
        );
        let p = pprof::profile(&r);
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total as u64, total_weight_ms(&r));
        // The text report has its GOROUTINES section.
        let t = text::text(&r, style::Style { color: false });
        assert!(
            t.contains("GOROUTINES  2002 goroutines in 3 groups (go1.23.9)"),
            "{t}"
        );
        assert!(t.contains("● 2000 goroutines — chan send, ≥ 4s"), "{t}");
    }

    #[test]
    fn weights_follow_the_documented_rules() {
        let mut r = testutil::report();
        let w: Vec<(String, u64)> = weighted_threads(&r)
            .map(|(t, w)| (t.name.clone(), w))
            .collect();
        assert_eq!(
            w,
            vec![
                ("main".to_string(), 1995),
                ("locker-a".to_string(), 4001),
                ("locker-b".to_string(), 4001)
            ]
        );
        assert_eq!(total_weight_ms(&r), 1995 + 4001 + 4001);
        // A flagged running thread shows with 1 ms and the stack of where it ran.
        let t = &mut r.threads[4];
        t.flagged = true;
        t.stack.clear();
        t.spin_samples = vec![vec![testutil::frame(
            "spin",
            testutil::SRC,
            7,
            testutil::EXE,
        )]];
        assert_eq!(weight_ms(t), Some(1));
        assert_eq!(profile_stack(t)[0].function.as_deref(), Some("spin"));
        // A sleeping thread weighs its blocked time; one with none is left out.
        let mut s = testutil::thread(9, "s", ThreadState::Sleeping, Some(700));
        assert_eq!(weight_ms(&s), Some(700));
        s.blocked_ms = None;
        assert_eq!(weight_ms(&s), None);
    }
}
