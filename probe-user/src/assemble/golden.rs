//! The golden report-v1 test: a fixed session (a fake host and hand-built kernel records, run
//! through the real tracker, lock findings, verdict and assembler) serialized as JSON and
//! compared with `golden-report-v1.json`.
//!
//! Schema rule: fields may be added, never renamed or removed. So:
//! - every key path of the golden file must still be in the report (this holds even when
//!   blessing: a rename or removal cannot be blessed away);
//! - any other difference fails too, until it is reviewed and blessed with
//!   `STALLPROBE_BLESS=1 cargo test -p probe-user --lib golden` (additions only).

use std::collections::{BTreeMap, BTreeSet};

use probe_ebpf::{Call, futex_op};
use serde_json::Value;

use crate::{
    assemble::{self, Findings},
    events::{CallRecord, Event, SlowCall, ThreadExit, Timeout},
    locks,
    procfs::SyscallState,
    report::*,
    tracker::{
        GoLook, Tracker, TrackerConfig,
        fake::{FakeHost, MS, PID, asleep, running, signal, task_state},
    },
    verdict::EndReason,
};

const GOLDEN: &str = "src/report/golden-report-v1.json";

/// Every key path in a JSON value (`a.b[].c`); arrays contribute the union of their items'.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                key_paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                key_paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn unix_peer_socket() -> FdObject {
    FdObject::Socket(Socket {
        proto: "unix".into(),
        inode: 883291,
        local: None,
        remote: Some("/run/upstream.sock".into()),
        state: Some("CONNECTED".into()),
        rx_queue: Some(0),
        tx_queue: Some(0),
        unix_type: Some("stream".into()),
        path: Some("@client".into()),
        peer: Some(SocketPeer {
            inode: Some(883292),
            holders: vec![Holder {
                pid: PID,
                comm: "app".into(),
                fd: 6,
                end: None,
            }],
            in_accept_queue: true,
            note: Some("peer in another namespace".into()),
        }),
    })
}

fn epoll_set() -> FdObject {
    FdObject::Epoll {
        items: vec![
            EpollItem {
                fd: 8,
                events: vec!["IN".into()],
                data: 0x8,
                ino: 4242,
                object: Some(Box::new(FdObject::Pipe(Pipe {
                    inode: 4242,
                    path: Some("/run/app.fifo".into()),
                    end: End::Read,
                    holders: vec![Holder {
                        pid: 300,
                        comm: "writer".into(),
                        fd: 3,
                        end: Some(End::Write),
                    }],
                    no_writer: false,
                    no_reader: false,
                    queued: Some(0),
                    capacity: Some(65536),
                    dev: 0,
                }))),
                note: Some("closed, file still registered".into()),
            },
            EpollItem {
                fd: 9,
                events: vec!["IN".into(), "ET".into()],
                data: 0x9,
                ino: 4243,
                object: Some(Box::new(FdObject::Timerfd {
                    clockid: "MONOTONIC".into(),
                    ticks: 0,
                    next_ms: Some(12.5),
                    interval_ms: Some(20.0),
                })),
                note: None,
            },
            EpollItem {
                fd: 10,
                events: vec!["IN".into()],
                data: 0xa,
                ino: 4244,
                object: Some(Box::new(FdObject::Eventfd { count: 1 })),
                note: None,
            },
            EpollItem {
                fd: 11,
                events: vec!["IN".into()],
                data: 0xb,
                ino: 4245,
                object: Some(Box::new(FdObject::Signalfd {
                    signals: vec!["SIGTERM".into()],
                })),
                note: None,
            },
            EpollItem {
                fd: 12,
                events: vec!["IN".into()],
                data: 0xc,
                ino: 4246,
                object: Some(Box::new(FdObject::File {
                    path: "/var/log/app.log".into(),
                    pos: 7,
                })),
                note: None,
            },
            EpollItem {
                fd: 13,
                events: vec!["IN".into()],
                data: 0xd,
                ino: 4247,
                object: Some(Box::new(FdObject::Tty {
                    path: "/dev/pts/0".into(),
                })),
                note: None,
            },
            EpollItem {
                fd: 14,
                events: vec!["IN".into()],
                data: 0xe,
                ino: 4248,
                object: Some(Box::new(FdObject::Other {
                    link: "anon_inode:inotify".into(),
                })),
                note: None,
            },
        ],
    }
}

/// Goroutines of the Go target: 2 leaked in a channel send (one group), one in a read
/// syscall on thread 101 (tid 2 in the target's namespace), main in wg.Wait() after the
/// signal, a runtime worker.
fn goroutines(main_moved: bool) -> GoLook {
    use std::sync::Arc;

    use probe_lang::go::{
        ChanOp, ChanWait, GStatus, GoFrame, GoRole, GoSnapshot, Goroutine, GoroutineKey,
    };
    let frame = |func: &str, line: u32, pc: u64| GoFrame {
        pc,
        function: Arc::from(func),
        file: Arc::from(if func.starts_with("main.") {
            "/src/app/main.go"
        } else {
            "/go/src/runtime/proc.go"
        }),
        line,
        inlined: false,
    };
    let g = |goid: u64,
             status: GStatus,
             reason: Option<&str>,
             func: &str,
             line: u32,
             wait: Option<ChanWait>| Goroutine {
        goid,
        addr: 0xc000_0000 + goid * 0x400,
        status,
        wait_reason: reason.map(Into::into),
        waitsince_ns: 0,
        thread: (status == GStatus::Syscall).then_some(2),
        stack: Arc::from(vec![
            GoFrame {
                inlined: true,
                ..frame("runtime.gopark", 398, 0x43_0000)
            },
            frame(func, line, 0x48_0000 + line as u64),
        ]),
        created_by: Some(frame("main.main", 57, 0x48_1000)),
        start_fn: Some(Arc::from(func)),
        parent_goid: Some(1),
        wait,
        key: GoroutineKey {
            goid,
            status,
            wait_reason: reason.map(Into::into),
            sched_pc: 0x43_0000 + line as u64,
            sched_sp: 0xc000_8000 + goid,
        },
        role: if func.starts_with("runtime.") {
            GoRole::Runtime
        } else {
            GoRole::Application
        },
        stack_note: None,
    };
    let chan = ChanWait {
        addr: 0xc000_0100,
        cap: 0,
        len: 0,
        closed: false,
        senders: 2,
        receivers: 0,
        op: ChanOp::Send,
        cases: 1,
    };
    let main = if main_moved {
        g(
            1,
            GStatus::Waiting,
            Some("sync.WaitGroup.Wait"),
            "main.main",
            70,
            None,
        )
    } else {
        g(
            1,
            GStatus::Waiting,
            Some("chan receive"),
            "main.main",
            66,
            None,
        )
    };
    let gs = vec![
        main,
        g(
            2,
            GStatus::Waiting,
            Some("force gc (idle)"),
            "runtime.forcegchelper",
            300,
            None,
        ),
        g(
            7,
            GStatus::Waiting,
            Some("chan send"),
            "main.submit",
            31,
            Some(chan.clone()),
        ),
        g(
            8,
            GStatus::Waiting,
            Some("chan send"),
            "main.submit",
            31,
            Some(chan),
        ),
        g(9, GStatus::Syscall, None, "main.readLine", 25, None),
    ];
    GoLook {
        version: "go1.23.9".into(),
        bias: 0x5555_0000_0000,
        exe: "/bin/app".into(),
        snapshot: GoSnapshot {
            total: gs.len() + 1,
            goroutines: gs,
            unreadable: 1,
            notes: vec!["test: runtime.g layout from DWARF".into()],
        },
        notes: vec!["test: pclntab 1.20".into()],
    }
}

/// The fixed session: threads blocked in a read (socket), in an epoll_wait, two in an AB-BA
/// mutex deadlock, one in an unprobed call, one spinning, one exited; a followed child that
/// exited and one killed; a slow call; SIGTERM and the grace period running out; and the
/// target is a Go program whose goroutines are read.
fn fixed_report() -> Report {
    let mut host = FakeHost::default();
    // The target runs in its own pid namespace.
    host.ns_ids
        .extend([(PID, 1), (101, 2), (102, 3), (103, 4), (104, 5), (105, 6)]);
    host.runtimes.insert(PID, Runtime::Go);
    host.go_looks.insert(
        PID,
        vec![goroutines(false), goroutines(false), goroutines(true)],
    );
    let mut t = Tracker::new(
        TrackerConfig {
            threshold_ns: 500 * MS,
            grace_ns: 2000 * MS,
        },
        0,
    );
    t.add_process(PID, 0, &mut host);
    let mut live = Vec::new();
    for (child, status) in [(200, 0), (300, 9)] {
        t.handle_event(
            Event::Fork {
                parent_tgid: PID,
                ts_ns: 50 * MS,
                child_pid: child,
                followed: true,
            },
            50 * MS,
            &mut host,
            &mut live,
        );
        host.zombie_status.insert(child, status);
        host.dead_processes.insert(child);
    }
    host.fd_targets.insert(5, "socket:[883291]".into());
    host.fd_targets.insert(7, "anon_inode:[eventpoll]".into());
    // The AB-BA mutexes: words locked with waiters, __owner 8 bytes on.
    host.memory.insert(0xa000, 2);
    host.memory.insert(0xa008, 103);
    host.memory.insert(0xb000, 2);
    host.memory.insert(0xb008, 104);
    let mut nanosleep = [0u64; 6];
    nanosleep[0] = 0x7ffd_0000;
    host.syscalls.insert(
        106,
        SyscallState::InSyscall {
            nr: 35,
            args: nanosleep,
            sp: 0,
            pc: 0,
        },
    );
    let lock = (futex_op::WAIT | futex_op::PRIVATE_FLAG) as u64;
    let mutex_stack = |func: &str| {
        vec![
            Frame {
                inlined: true,
                ..crate::tracker::fake::frame("futex_wait")
            },
            crate::tracker::fake::frame("__lll_lock_wait"),
            crate::tracker::fake::frame("pthread_mutex_lock"),
            crate::tracker::fake::frame(func),
        ]
    };
    host.user_stacks.insert(103, mutex_stack("locker_a"));
    host.user_stacks.insert(104, mutex_stack("locker_b"));
    let mut epoll = asleep(102, Some((Call::EpollWait, 7, 64, 200 * MS)), 3);
    let inflight = &mut epoll.state.as_mut().unwrap().inflight;
    inflight.flags = probe_ebpf::inflight_flags::HAS_TIMEOUT;
    inflight.timeout_ns = 30_000 * MS;
    let mut waker = asleep(103, Some((Call::Futex, 0xb000, lock, 300 * MS)), 4);
    waker.state.as_mut().unwrap().woke_addr = 0xa000;
    waker.state.as_mut().unwrap().woke_count = 3;
    waker.state.as_mut().unwrap().wakes_after_signal = 1;
    let mut stats = task_state(None);
    stats.stats[Call::Read as usize].count = 2;
    stats.stats[Call::Read as usize].total_ns = 900 * MS;
    stats.stats[Call::Read as usize].max_ns = 800 * MS;
    stats.stats[Call::Read as usize].buckets[29] = 2;
    let snaps = |now: u64| {
        let mut read = asleep(101, Some((Call::Read, 5, 0, 100 * MS)), 2);
        read.state.as_mut().unwrap().stats = stats.stats;
        vec![
            read,
            epoll.clone(),
            waker.clone(),
            asleep(104, Some((Call::Futex, 0xa000, lock, 310 * MS)), 5),
            running(105),
            asleep(106, None, 6),
            asleep(107, None, 7),
        ]
        .into_iter()
        .map(|mut s| {
            s.now_ns = now;
            s
        })
        .collect::<Vec<_>>()
    };
    t.observe(&snaps(60 * MS), 60 * MS, &mut host, &mut live);
    t.observe(&snaps(1_000 * MS), 1_000 * MS, &mut host, &mut live);
    t.observe(&snaps(1_100 * MS), 1_100 * MS, &mut host, &mut live);
    t.handle_event(
        Event::SlowCall(Box::new(SlowCall {
            tid: 101,
            tgid: PID,
            end_ns: 1_100 * MS,
            call: CallRecord {
                call: Call::Read,
                start_ns: 500 * MS,
                obj: 5,
                arg: 0,
                timeout: Timeout::None,
                interrupted_ns: 0,
            },
            dur_ns: 600 * MS,
            ret: 4,
            regs: Default::default(),
            stack: Vec::new(),
        })),
        1_100 * MS,
        &mut host,
        &mut live,
    );
    t.handle_event(signal(2_000 * MS), 2_000 * MS, &mut host, &mut live);
    t.handle_event(
        Event::ThreadExit(ThreadExit {
            tid: 107,
            tgid: PID,
            ts_ns: 2_001 * MS,
            comm: "helper".into(),
            state: None,
        }),
        2_001 * MS,
        &mut host,
        &mut live,
    );
    let mut later = snaps(2_200 * MS);
    later.retain(|s| s.tid != 107);
    t.observe(&later, 2_200 * MS, &mut host, &mut live);
    let now = 4_100 * MS;
    t.observe(&later, now, &mut host, &mut live);
    let _ = t.prepare_report(now, &mut host, 512);
    let facts = t.thread_facts(now, &host, 100);
    let futex = locks::futex_findings(&facts, |_, a| host.memory.get(&a).copied(), now);
    let findings = Findings {
        futex,
        fd_objects: BTreeMap::from([((PID, 5), unix_peer_socket()), ((PID, 7), epoll_set())]),
        perf_maps: BTreeSet::new(),
        skipped_perf_maps: BTreeMap::from([(300, "/tmp/perf-300.map: a symlink".to_string())]),
        // The target embeds Python: the running thread runs (and holds the GIL for) a function.
        runtimes: BTreeMap::from([(
            PID,
            assemble::RuntimeView::Python(probe_lang::python::PySnapshot {
                threads: vec![probe_lang::python::PyThread {
                    tid: Some(105),
                    tstate: 0x9000,
                    frames: vec![probe_lang::python::PyFrame {
                        function: "Spinner.run".into(),
                        file: "/srv/app/spin.py".into(),
                        line: Some(12),
                        entry: true,
                    }],
                    why_empty: None,
                    incomplete: None,
                }],
                gil: probe_lang::python::Gil::Held {
                    tstate: 0x9000,
                    tid: Some(105),
                },
                gil_holder: Some(105),
                gil_range: None,
                notes: vec!["CPython 3.11.9 in /usr/lib/libpython3.11.so.1.0".into()],
            }),
        )]),
        runtime_notes: vec!["pid 300: no runtime attach (--no-runtime-attach)".into()],
    };
    let (target, children) = t.targets(&host);
    assemble::report(assemble::Inputs {
        tracker: &t,
        facts,
        findings,
        target,
        children,
        end: EndReason::GraceExpired,
        now_ns: now,
        counters: Counters {
            dropped_slow_calls: 1,
            dropped_signals: 0,
            dropped_thread_exits: 0,
            dropped_lifecycle: 0,
            task_storage_failures: 0,
            stack_copy_failures: 0,
            slow_calls: 2,
            signals: 1,
        },
        session: SessionInfo {
            stallprobe_version: "0.1.0",
            hook: Hook::Raw,
            threshold_ms: 500.0,
            interval_ms: 250.0,
            watched_ms: 4100,
            peak_rss_kb: 10240,
            goroutine_read_ms: Some(3),
            probed_calls: vec!["futex", "read"],
            unprobed_calls: vec!["futex_waitv"],
        },
        notes: vec!["fentry is not available here (test); using raw tracepoints".into()],
    })
}

#[test]
fn report_v1_schema_is_pinned_by_the_golden_file() {
    let mut report = fixed_report();
    // The JSON does not say whether the signal was ignored unless it was: pin that field too.
    if let Some(s) = report.shutdown.as_mut() {
        s.ignored = true;
    }
    let current: Value = serde_json::to_value(&report).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let bless = std::env::var_os("STALLPROBE_BLESS").is_some();
    let golden: Option<Value> = std::fs::read_to_string(&path)
        .ok()
        .map(|s| serde_json::from_str(&s).expect("the golden file is JSON"));
    let mut now_paths = BTreeSet::new();
    key_paths(&current, "", &mut now_paths);
    if let Some(golden) = &golden {
        let mut old_paths = BTreeSet::new();
        key_paths(golden, "", &mut old_paths);
        let gone: Vec<&String> = old_paths.difference(&now_paths).collect();
        assert!(
            gone.is_empty(),
            "report-v1 fields renamed or removed (fields may only be added): {gone:#?}"
        );
    }
    if bless || golden.is_none() {
        let mut text = serde_json::to_string_pretty(&current).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        assert!(
            bless,
            "wrote a new golden file {GOLDEN}: review it and commit it"
        );
        return;
    }
    let golden = golden.unwrap();
    assert!(
        current == golden,
        "the report differs from {GOLDEN} (new fields or new values): review the difference \
         and bless it with STALLPROBE_BLESS=1\ncurrent:\n{}",
        serde_json::to_string_pretty(&current).unwrap()
    );
}

#[test]
fn the_fixed_session_covers_the_report() {
    let r = fixed_report();
    assert_eq!(r.verdict, Verdict::Stalled);
    assert_eq!(r.deadlocks.len(), 1, "{:?}", r.deadlocks);
    assert_eq!(r.goroutines_total, Some(5));
    let flagged: Vec<(u64, u64)> = r.flagged_groups().map(|g| (g.count, g.goids[0])).collect();
    assert_eq!(
        flagged,
        [(2, 7), (1, 9), (1, 1)],
        "{:#?}",
        r.goroutine_groups
    );
    let reader = r.goroutines.iter().find(|g| g.goid == 9).unwrap();
    assert_eq!(reader.thread, Some(101), "namespace tid 2 is thread 101");
    match &reader.wait {
        Some(GoWait::Thread { wait: Some(w), .. }) => {
            assert!(w.describe().contains("unix stream"), "{}", w.describe())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.children.len(), 2);
    assert!(r.slow_calls_total == 1 && !r.timeline.is_empty());
    let by_tid: BTreeMap<u32, &ThreadReport> = r.threads.iter().map(|t| (t.tid, t)).collect();
    assert!(by_tid[&103].flagged && by_tid[&104].flagged);
    assert_eq!(by_tid[&107].state, ThreadState::Exited);
    match &by_tid[&103].wait {
        Some(Wait::Futex {
            owner: Some(104), ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match &by_tid[&104].wait {
        Some(Wait::Futex {
            last_woken_by: Some(w),
            ..
        }) => assert_eq!(w.tid, 103),
        other => panic!("{other:?}"),
    }
}
