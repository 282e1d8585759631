//! The tracker on made-up inputs: a fake host (what /proc and the target's memory say) and
//! hand-built kernel records, as the task iterator and the ring buffer deliver them.

use std::collections::BTreeMap;

use probe_ebpf::{Call, futex_op};

use super::{
    fake::{FakeHost, MS, PID, asleep, running, signal, task_state},
    *,
};
use crate::{
    events::{Event, ThreadExit},
    procfs::SyscallState,
    report::{BlockedSince, ThreadState, Wait},
};

fn tracker(host: &mut FakeHost) -> Tracker {
    let mut t = Tracker::new(
        TrackerConfig {
            threshold_ns: 500 * MS,
            grace_ns: 2000 * MS,
        },
        0,
    );
    t.add_process(PID, 0, host);
    t
}

fn facts_of(t: &Tracker, now: u64, host: &FakeHost) -> BTreeMap<u32, ThreadFacts> {
    t.thread_facts(now, host, 100)
        .into_iter()
        .map(|f| (f.tid, f))
        .collect()
}

#[test]
fn a_probed_block_is_announced_once_with_its_stack_and_wait() {
    let mut host = FakeHost::default();
    host.fd_targets.insert(5, "socket:[77]".into());
    let mut t = tracker(&mut host);
    let read = (Call::Read, 5, 0, 100 * MS);
    let mut live = Vec::new();
    // 300 ms into the read: under the threshold, nothing to say.
    t.observe(
        &[asleep(101, Some(read), 1)],
        400 * MS,
        &mut host,
        &mut live,
    );
    assert!(live.is_empty(), "{live:?}");
    // 700 ms: crossed it.
    t.observe(
        &[asleep(101, Some(read), 2)],
        800 * MS,
        &mut host,
        &mut live,
    );
    assert_eq!(live.len(), 1, "{live:?}");
    match &live[0] {
        LiveEvent::Blocked {
            tid,
            syscall,
            wait,
            blocked_ms,
            at,
            ..
        } => {
            assert_eq!((*tid, syscall.as_str(), *blocked_ms), (101, "read", 700));
            assert_eq!(wait.as_ref().unwrap().describe(), "fd 5 (socket:[77])");
            assert_eq!(at.as_deref(), Some("wait_in_101 (app.c:42)"));
        }
        other => panic!("{other:?}"),
    }
    // The same block at the next look: not announced again.
    live.clear();
    t.observe(
        &[asleep(101, Some(read), 3)],
        1200 * MS,
        &mut host,
        &mut live,
    );
    assert!(live.is_empty(), "{live:?}");
    let f = &facts_of(&t, 1200 * MS, &host)[&101];
    assert_eq!(f.state, ThreadState::Blocked);
    assert_eq!(f.blocked_since, Some(BlockedSince::Probe));
    assert_eq!(f.blocked_ms, Some(1100));
    assert_eq!(f.stack[0].function.as_deref(), Some("wait_in_101"));
}

#[test]
fn a_call_begun_before_attach_is_read_from_proc_and_timed_from_the_scheduler() {
    let mut host = FakeHost::default();
    let mut args = [0u64; 6];
    args[0] = 0x5000;
    args[1] = futex_op::WAIT_BITSET as u64 | futex_op::PRIVATE_FLAG as u64;
    host.syscalls.insert(
        102,
        SyscallState::InSyscall {
            nr: Call::Futex.nr(),
            args,
            sp: 0,
            pc: 0,
        },
    );
    host.memory.insert(0x5000, 2);
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    // It last ran at 50 ms on the monotonic clock: asleep since then.
    let mut s = asleep(102, None, 1_000 * MS);
    s.reader_arrival = 1_950 * MS;
    s.now_ns = 1_000 * MS;
    t.observe(&[s.clone()], 1_000 * MS, &mut host, &mut live);
    let f = &facts_of(&t, 1_000 * MS, &host)[&102];
    assert_eq!(f.state, ThreadState::Blocked);
    assert_eq!(f.syscall.as_deref(), Some("futex"));
    assert_eq!(f.blocked_since, Some(BlockedSince::Sched));
    assert_eq!(f.blocked_ms, Some(950));
    match &f.wait {
        Some(Wait::Futex {
            addr, op, value, ..
        }) => {
            assert_eq!(*addr, 0x5000);
            assert_eq!(op, "FUTEX_WAIT_BITSET_PRIVATE");
            assert_eq!(*value, Some(2));
        }
        other => panic!("{other:?}"),
    }
    // Crossed the threshold: announced.
    assert!(
        matches!(&live[..], [LiveEvent::Blocked { tid: 102, .. }]),
        "{live:?}"
    );
    // Asleep since the last look (same last arrival): /proc is not read again.
    let reads = host.syscall_reads.get();
    t.observe(&[s], 1_250 * MS, &mut host, &mut live);
    assert_eq!(
        host.syscall_reads.get(),
        reads,
        "an unchanged thread costs no /proc read"
    );
}

#[test]
fn a_restarted_call_is_still_the_same_block() {
    let mut host = FakeHost::default();
    host.syscalls.insert(
        103,
        SyscallState::InSyscall {
            nr: crate::syscalls::RESTART_SYSCALL,
            args: [0; 6],
            sp: 0,
            pc: 0,
        },
    );
    let mut t = tracker(&mut host);
    let mut s = asleep(103, Some((Call::EpollWait, 7, 16, 10 * MS)), 1);
    s.state.as_mut().unwrap().inflight.interrupted_ns = 300 * MS;
    let mut live = Vec::new();
    t.observe(&[s.clone()], 900 * MS, &mut host, &mut live);
    let f = &facts_of(&t, 900 * MS, &host)[&103];
    assert_eq!(f.state, ThreadState::Blocked);
    assert_eq!(f.blocked_ms, Some(890), "counted from the first entry");
    // Not restarted (the thread is in another call now): the record is stale.
    host.syscalls.insert(
        103,
        SyscallState::InSyscall {
            nr: 35, // nanosleep
            args: [0; 6],
            sp: 0,
            pc: 0,
        },
    );
    s.last_arrival = 2;
    t.observe(&[s], 1000 * MS, &mut host, &mut live);
    let f = &facts_of(&t, 1000 * MS, &host)[&103];
    assert_eq!(f.state, ThreadState::Sleeping);
    assert_eq!(f.syscall.as_deref(), Some("nanosleep"));
}

#[test]
fn a_shutdown_records_where_each_thread_was_and_the_exit_untargets_the_process() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    let read = (Call::Read, 5, 0, 100 * MS);
    t.observe(
        &[asleep(101, Some(read), 1), running(104)],
        1_000 * MS,
        &mut host,
        &mut live,
    );
    live.clear();
    t.handle_event(signal(1_100 * MS), 1_100 * MS, &mut host, &mut live);
    assert!(
        matches!(&live[..], [LiveEvent::Signal { first: true, .. }]),
        "{live:?}"
    );
    assert_eq!(t.grace_deadline_ns(), Some(3_100 * MS));
    // A running thread is sampled after the signal.
    t.observe(
        &[asleep(101, Some(read), 1), running(104)],
        1_200 * MS,
        &mut host,
        &mut live,
    );
    let facts = facts_of(&t, 1_200 * MS, &host);
    let at = facts[&101].at_signal.as_ref().expect("state at the signal");
    assert_eq!(at.state, ThreadState::Blocked);
    assert_eq!(at.syscall.as_deref(), Some("read"));
    assert_eq!(facts[&104].spin_samples.len(), 1);
    assert!(!t.episode_exited());

    // The process dies: a zombie with exit code 3.
    host.dead_processes.insert(PID);
    host.zombie_status.insert(PID, 3 << 8);
    live.clear();
    t.observe(&[], 1_500 * MS, &mut host, &mut live);
    assert!(
        live.iter().any(|e| matches!(
            e,
            LiveEvent::ProcessExited {
                exit_code: Some(3),
                after_signal_ms: Some(400),
                ..
            }
        )),
        "{live:?}"
    );
    assert!(t.episode_exited() && t.all_exited());
    assert_eq!(t.judged_exit_ns(), Some(1_500 * MS));
    assert_eq!(t.take_probe_commands(), vec![ProbeCommand::Untarget(PID)]);
    assert!(t.take_probe_commands().is_empty(), "each command once");
    let facts = facts_of(&t, 1_600 * MS, &host);
    assert!(facts.values().all(|f| f.state == ThreadState::Exited));
    assert_eq!(facts[&101].exited_after_ms, Some(400));
}

#[test]
fn an_exit_event_completes_a_thread_already_seen_gone() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    t.observe(&[running(105)], 100 * MS, &mut host, &mut live);
    host.dead_threads.insert(105);
    t.observe(&[], 200 * MS, &mut host, &mut live);
    let mut st = task_state(None);
    st.stats[Call::Futex as usize].count = 4;
    t.handle_event(
        Event::ThreadExit(ThreadExit {
            tid: 105,
            tgid: PID,
            ts_ns: 150 * MS,
            comm: "t105".into(),
            state: Some(st),
        }),
        250 * MS,
        &mut host,
        &mut live,
    );
    let facts = t.thread_facts(300 * MS, &host, 100);
    let mine: Vec<&ThreadFacts> = facts.iter().filter(|f| f.tid == 105).collect();
    assert_eq!(mine.len(), 1, "one entry, not two");
    assert_eq!(mine[0].state, ThreadState::Exited);
    assert_eq!(mine[0].blocks["futex"].count, 4);
    assert_eq!(mine[0].exited_after_ms, Some(150));
}

#[test]
fn an_exit_seen_by_a_look_first_is_still_announced_once() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    t.observe(&[running(105)], 100 * MS, &mut host, &mut live);
    t.handle_event(signal(120 * MS), 120 * MS, &mut host, &mut live);
    host.dead_threads.insert(105);
    t.observe(&[], 200 * MS, &mut host, &mut live);
    t.handle_event(
        Event::ThreadExit(ThreadExit {
            tid: 105,
            tgid: PID,
            ts_ns: 150 * MS,
            comm: "t105".into(),
            state: None,
        }),
        250 * MS,
        &mut host,
        &mut live,
    );
    let exits = live
        .iter()
        .filter(|e| matches!(e, LiveEvent::ThreadExited { tid: 105, .. }))
        .count();
    assert_eq!(exits, 1, "{live:?}");
    let on_timeline = t
        .timeline()
        .iter()
        .filter(|e| e.text.starts_with("thread 105 "))
        .count();
    assert_eq!(on_timeline, 1, "{:?}", t.timeline());
}

#[test]
fn thread_churn_keeps_memory_bounded_and_counts_what_it_drops() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    let n = super::MAX_EXITED as u32 + 50;
    for tid in 1000..1000 + n {
        t.handle_event(
            Event::ThreadExit(ThreadExit {
                tid,
                tgid: PID,
                ts_ns: tid as u64,
                comm: "worker".into(),
                state: None,
            }),
            0,
            &mut host,
            &mut live,
        );
    }
    assert_eq!(t.exited_not_listed(), 50);
    assert_eq!(t.thread_facts(0, &host, 100).len(), super::MAX_EXITED);
}

#[test]
fn followed_children_and_execs() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    t.handle_event(
        Event::Fork {
            parent_tgid: PID,
            ts_ns: 10,
            child_pid: 200,
            followed: true,
        },
        10,
        &mut host,
        &mut live,
    );
    assert!(t.watches(200));
    assert!(host.prepared.contains(&200));
    t.handle_event(
        Event::Exec {
            tgid: 200,
            ts_ns: 20,
        },
        20,
        &mut host,
        &mut live,
    );
    assert!(
        host.forgotten.contains(&200),
        "an exec drops the old image's symbols"
    );
    assert!(
        matches!(
            &live[..],
            [
                LiveEvent::ChildStarted {
                    pid: 200,
                    followed: true,
                    ..
                },
                LiveEvent::Exec { pid: 200, .. }
            ]
        ),
        "{live:?}"
    );
    let (target, children) = t.targets(&host);
    assert_eq!(target.pid, PID);
    assert_eq!(children.len(), 1);
}

#[test]
fn reset_episode_forgets_the_shutdown_and_the_dead() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    t.handle_event(signal(10 * MS), 10 * MS, &mut host, &mut live);
    host.dead_processes.insert(PID);
    t.observe(&[], 20 * MS, &mut host, &mut live);
    assert!(t.shutdown_signal().is_some() && !t.timeline().is_empty());
    t.reset_episode(&mut host);
    assert!(t.shutdown_signal().is_none());
    assert!(t.timeline().is_empty());
    assert!(!t.watches(PID), "an exited process is dropped");
    assert!(host.forgotten.contains(&PID));
}

#[test]
fn an_exited_process_is_forgotten_at_once_and_its_reused_pid_starts_afresh() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    t.add_process(300, 5 * MS, &mut host);
    host.dead_processes.insert(300);
    t.observe(&[], 20 * MS, &mut host, &mut live);
    assert!(
        host.forgotten.contains(&300),
        "unwinders and symbols freed at the exit"
    );
    assert!(!t.watches(300), "an exited pid is not watched");
    // The pid now names another process: it is read again, not taken for the old one.
    host.dead_processes.remove(&300);
    let prepared = host.prepared.iter().filter(|&&p| p == 300).count();
    t.add_process(300, 30 * MS, &mut host);
    assert!(t.watches(300));
    assert_eq!(
        host.prepared.iter().filter(|&&p| p == 300).count(),
        prepared + 1
    );
    t.observe(&[], 40 * MS, &mut host, &mut live);
    assert!(t.watches(300), "the new process is alive");
}

#[test]
fn helper_churn_keeps_a_bounded_number_of_exited_processes() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    for i in 0..1000u32 {
        let pid = 1000 + i % 500; // pids come back
        host.dead_processes.remove(&pid);
        t.add_process(pid, u64::from(i) * MS, &mut host);
        host.dead_processes.insert(pid);
        t.observe(&[], u64::from(i) * MS + 1, &mut host, &mut live);
    }
    assert!(
        t.process_count() <= MAX_EXITED_PROCESSES + 1,
        "{} processes kept",
        t.process_count()
    );
    assert!(t.watches(PID), "the target itself is never forgotten");
}

#[test]
fn a_full_timeline_makes_room_for_the_shutdown() {
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    // Days of helper exits before any signal fill the timeline.
    for i in 0..(MAX_TIMELINE as u32 + 10) {
        t.add_timeline(u64::from(i) * MS, format!("helper {i} exited"), None);
    }
    let at = (MAX_TIMELINE as u64 + 20) * MS;
    t.handle_event(signal(at), at, &mut host, &mut live);
    assert_eq!(t.timeline().len(), MAX_TIMELINE);
    assert!(t.timeline_full());
    assert!(
        t.timeline().iter().any(|e| e.ts_ns == at),
        "the signal is on the timeline"
    );
    // After the signal, the episode's first entries are kept over later ones.
    for i in 0..(MAX_TIMELINE as u64 + 10) {
        t.add_timeline(at + i + 1, "after".into(), None);
    }
    assert!(t.timeline().iter().any(|e| e.ts_ns == at));
}

mod go {
    use std::sync::Arc;

    use probe_lang::go::{GStatus, GoFrame, GoRole, GoSnapshot, Goroutine, GoroutineKey};

    use super::*;
    use crate::report::{Runtime, WaitingSince};

    fn g(goid: u64, reason: &str, pc: u64, func: &str) -> Goroutine {
        let frame = GoFrame {
            pc,
            function: Arc::from(func),
            file: Arc::from("/src/app/main.go"),
            line: 31,
            inlined: false,
        };
        Goroutine {
            goid,
            addr: 0xc000_0000 + goid * 0x400,
            status: GStatus::Waiting,
            wait_reason: Some(reason.into()),
            waitsince_ns: 0,
            thread: None,
            stack: vec![frame.clone()].into(),
            created_by: Some(GoFrame {
                function: Arc::from("main.main"),
                line: 57,
                ..frame
            }),
            start_fn: Some(Arc::from(func)),
            parent_goid: Some(1),
            wait: None,
            key: GoroutineKey {
                goid,
                status: GStatus::Waiting,
                wait_reason: Some(reason.into()),
                sched_pc: pc,
                sched_sp: 0x7000 + goid,
            },
            role: GoRole::Application,
            stack_note: None,
        }
    }

    fn look(gs: Vec<Goroutine>) -> GoLook {
        GoLook {
            version: "go1.23.9".into(),
            bias: 0,
            exe: "/bin/app".into(),
            snapshot: GoSnapshot {
                total: gs.len(),
                goroutines: gs,
                unreadable: 0,
                notes: vec![],
            },
            notes: vec![],
        }
    }

    #[test]
    fn looks_before_at_and_after_the_signal_give_waiting_times() {
        let mut host = FakeHost::default();
        host.runtimes.insert(PID, Runtime::Go);
        let leak = g(7, "chan send", 0x4000, "main.worker");
        let main_before = g(1, "chan receive", 0x5000, "main.main");
        let main_after = g(1, "semacquire", 0x6000, "main.main");
        host.go_looks.insert(
            PID,
            vec![
                look(vec![main_before.clone(), leak.clone()]), // first look, 1 s in
                look(vec![main_before, leak.clone()]),         // at the signal
                look(vec![main_after, leak]),                  // for the report
            ],
        );
        let mut t = tracker(&mut host);
        let mut live = Vec::new();
        t.observe(&[], 100 * MS, &mut host, &mut live);
        assert_eq!(t.go_keys_held(), 0, "the first look waits a second");
        t.observe(&[], 1_200 * MS, &mut host, &mut live);
        assert_eq!(t.go_keys_held(), 2 * 2, "first and before-signal looks");
        t.handle_event(signal(2_000 * MS), 2_000 * MS, &mut host, &mut live);
        let _ = t.prepare_report(4_000 * MS, &mut host, 512);
        let facts = t.goroutine_facts(&[], 4_000 * MS);
        let by_goid: BTreeMap<u64, &GoroutineFacts> = facts.iter().map(|f| (f.goid, f)).collect();
        let leak = by_goid[&7];
        assert!(leak.since_before_signal && leak.unchanged_since_signal);
        assert_eq!(leak.waiting_since, Some(WaitingSince::Attach));
        assert_eq!(leak.waiting_ms, Some(2_800));
        let main = by_goid[&1];
        assert!(main.seen_at_signal && !main.unchanged_since_signal && !main.since_before_signal);
        assert_eq!(main.waiting_since, Some(WaitingSince::Look));
        assert_eq!(main.created_by.as_ref().unwrap().line, Some(57));
        assert_eq!(t.go_version(PID).as_deref(), Some("go1.23.9"));
        // The episode is forgotten, the first look is kept.
        t.reset_episode(&mut host);
        assert_eq!(t.go_keys_held(), 2 * 2);
    }

    #[test]
    fn unreadable_goroutines_say_why() {
        let mut host = FakeHost::default();
        host.runtimes.insert(PID, Runtime::Go);
        let mut t = tracker(&mut host);
        let mut live = Vec::new();
        t.observe(&[], 100 * MS, &mut host, &mut live);
        t.observe(&[], 1_200 * MS, &mut host, &mut live);
        let notes = t.go_notes();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("could not be read (not a Go process)")),
            "{notes:?}"
        );
        assert!(t.goroutine_facts(&[], 2_000 * MS).is_empty());
    }
}

#[test]
fn a_reaped_child_leaves_no_thread_blocked_even_without_their_exit_events() {
    // `run` reaps its command before the tracker saw every thread's exit event: the report
    // must not show a thread of an exited process as still blocked.
    let mut host = FakeHost::default();
    let mut t = tracker(&mut host);
    let mut live = Vec::new();
    let epoll = (Call::EpollWait, 4, 0, 100 * MS);
    t.observe(
        &[running(PID), asleep(101, Some(epoll), 1)],
        800 * MS,
        &mut host,
        &mut live,
    );
    t.note_exit_status(PID, Some(0), None, 900 * MS);
    let facts = facts_of(&t, 1000 * MS, &host);
    assert_eq!(facts[&101].state, ThreadState::Exited, "{:?}", facts[&101]);
    assert!(facts.values().all(|f| f.state == ThreadState::Exited));
    assert!(t.all_exited());
}
