//! The merge on recorded inputs: a thread dump saved from OpenJDK 17 here, and Python
//! snapshots as the reader returns them.

use probe_lang::{
    java::parse_thread_dump,
    python::{Gil, PyFrame, PySnapshot, PyThread},
};

use super::*;
use crate::{
    locks::find_cycles,
    report::{ThreadState, Wait},
    tracker::ThreadFacts,
};

const MONITOR: &str = include_str!("../../../../probe-lang/tests/data/jdk17-monitor-deadlock.txt");

fn native(function: Option<&str>, module: &str) -> Frame {
    Frame {
        function: function.map(str::to_string),
        module: Some(module.into()),
        ..Frame::default()
    }
}

const LIBJVM: &str = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

/// A JVM thread blocked entering a monitor, as stallprobe unwinds it without a perf map.
fn jvm_thread(tid: u32, name: &str) -> ThreadFacts {
    let mut t = ThreadFacts::new(1, tid, name.into(), ThreadState::Blocked);
    t.stack = vec![
        native(Some("__futex_abstimed_wait_common"), LIBC),
        native(Some("os::PlatformEvent::park(long)"), LIBJVM),
        native(Some("ObjectMonitor::enter(JavaThread*)"), LIBJVM),
        native(
            Some("InterpreterRuntime::monitorenter(JavaThread*, BasicObjectLock*)"),
            LIBJVM,
        ),
        native(None, "?"),
        native(None, "?"),
        native(
            Some("JavaCalls::call_helper(JavaValue*, methodHandle const&)"),
            LIBJVM,
        ),
        native(Some("thread_native_entry(Thread*)"), LIBJVM),
        native(Some("start_thread"), LIBC),
    ];
    t.wait = Some(Wait::futex(
        0x7f00_0000_1000 + u64::from(tid),
        "FUTEX_WAIT".into(),
        None,
        Some(0),
    ));
    if let Some(Wait::Futex { object, .. }) = &mut t.wait {
        *object = Some("java_monitor".into());
    }
    t
}

#[test]
fn java_frames_replace_the_interpreter_span_and_monitors_make_the_cycle() {
    let dump = parse_thread_dump(MONITOR);
    let mut facts = vec![
        jvm_thread(0x5c31, "locker-a"),
        jvm_thread(0x5c32, "locker-b"),
    ];
    let views = BTreeMap::from([(1, RuntimeView::Java(dump))]);
    let notes = apply(&mut facts, &views);
    let a = &facts[0];
    let names: Vec<&str> = a
        .stack
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    let at = names
        .iter()
        .position(|n| *n == "JavaStacks.lockBoth")
        .unwrap();
    assert_eq!(
        names[at - 1],
        "InterpreterRuntime::monitorenter(JavaThread*, BasicObjectLock*)",
        "Java frames right above the VM's monitor enter: {names:?}"
    );
    assert!(names[at..].contains(&"java.lang.Thread.run"));
    assert!(
        names.contains(&"JavaCalls::call_helper(JavaValue*, methodHandle const&)"),
        "the VM's frames below Java stay"
    );
    assert_eq!(
        a.stack.iter().filter(|f| f.function.is_none()).count(),
        0,
        "no unknown frames left"
    );
    let top = &a.stack[at];
    assert_eq!(top.lang, Some(Lang::Java));
    assert_eq!(
        (top.file.as_deref(), top.line),
        (Some("JavaStacks.java"), Some(26))
    );
    assert_eq!(
        a.lang_note.as_deref(),
        Some("Java thread state: BLOCKED (on object monitor)")
    );
    assert_eq!(
        a.holds,
        ["locked <0x000000069ec1aa68> (a java.lang.Object)"]
    );
    match &a.wait {
        Some(Wait::Futex {
            owner,
            owner_name,
            runtime_object,
            ..
        }) => {
            assert_eq!(*owner, Some(0x5c32));
            assert_eq!(owner_name.as_deref(), Some("locker-b"));
            assert_eq!(
                runtime_object.as_deref(),
                Some("waiting to lock <0x000000069ec1aa78> (a java.lang.Object)")
            );
        }
        w => panic!("{w:?}"),
    }
    // The owners close the cycle: the deadlock graph has it.
    let cycles = find_cycles(&facts);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        notes.iter().any(|n| n.contains("Java-level deadlock")),
        "{notes:?}"
    );
}

#[test]
fn without_the_vm_call_frame_java_frames_follow_and_say_so() {
    let dump = parse_thread_dump(MONITOR);
    let mut t = jvm_thread(0x5c31, "locker-a");
    t.stack.truncate(4); // the unwind stopped in the VM
    let mut facts = vec![t];
    apply(&mut facts, &BTreeMap::from([(1, RuntimeView::Java(dump))]));
    let t = &facts[0];
    assert_eq!(t.stack[4].function.as_deref(), Some("JavaStacks.lockBoth"));
    assert!(
        t.lang_note
            .as_deref()
            .unwrap()
            .contains("listed after the native ones")
    );
}

fn py(function: &str, file: &str, line: u32, entry: bool) -> PyFrame {
    PyFrame {
        function: function.into(),
        file: file.into(),
        line: Some(line),
        entry,
    }
}

fn snapshot(holder: Option<u32>) -> PySnapshot {
    PySnapshot {
        threads: vec![
            PyThread {
                tid: Some(11),
                tstate: 0x1000,
                frames: vec![
                    py("Worker.take", "/srv/app/worker.py", 41, false),
                    py("Worker.run", "/srv/app/worker.py", 30, true),
                ],
                why_empty: None,
                incomplete: None,
            },
            PyThread {
                tid: Some(12),
                tstate: 0x2000,
                frames: vec![py("spin", "/srv/app/\x1b[31mevil.py", 3, true)],
                why_empty: None,
                incomplete: None,
            },
        ],
        gil: Gil::Held {
            tstate: 0x2000,
            tid: holder,
        },
        gil_holder: holder,
        gil_range: Some((0x9_0000, 0x9_00d0)),
        notes: vec!["CPython 3.11.9 in /usr/bin/python3.11".into()],
    }
}

fn python_thread_facts(tid: u32, name: &str, in_take_gil: bool) -> ThreadFacts {
    let mut t = ThreadFacts::new(1, tid, name.into(), ThreadState::Blocked);
    let mut stack = vec![native(Some("__futex_abstimed_wait_common"), LIBC)];
    if in_take_gil {
        stack.push(native(Some("take_gil"), "/usr/bin/python3.11"));
    }
    stack.extend([
        native(Some("_PyEval_EvalFrameDefault"), "/usr/bin/python3.11"),
        native(Some("thread_run"), "/usr/bin/python3.11"),
        native(Some("start_thread"), LIBC),
    ]);
    t.stack = stack;
    t.wait = Some(Wait::futex(
        0x5000,
        "FUTEX_WAIT_BITSET_PRIVATE".into(),
        None,
        Some(0),
    ));
    t
}

#[test]
fn python_frames_go_where_the_eval_loop_runs_them() {
    let mut facts = vec![python_thread_facts(11, "worker", false)];
    let notes = apply(
        &mut facts,
        &BTreeMap::from([(1, RuntimeView::Python(snapshot(None)))]),
    );
    let names: Vec<(Option<&str>, Option<Lang>)> = facts[0]
        .stack
        .iter()
        .map(|f| (f.function.as_deref(), f.lang))
        .collect();
    assert_eq!(
        names,
        [
            (Some("__futex_abstimed_wait_common"), None),
            (Some("Worker.take"), Some(Lang::Python)),
            (Some("Worker.run"), Some(Lang::Python)),
            (Some("thread_run"), None),
            (Some("start_thread"), None),
        ]
    );
    assert_eq!(
        facts[0].stack[1].file.as_deref(),
        Some("/srv/app/worker.py")
    );
    assert!(
        notes.iter().any(|n| n.contains("CPython 3.11.9")),
        "{notes:?}"
    );
}

#[test]
fn a_thread_in_take_gil_waits_for_the_holder() {
    let mut facts = vec![
        python_thread_facts(11, "worker", true),
        python_thread_facts(12, "spinner", false),
        python_thread_facts(13, "native-helper", false),
    ];
    apply(
        &mut facts,
        &BTreeMap::from([(1, RuntimeView::Python(snapshot(Some(12))))]),
    );
    match &facts[0].wait {
        Some(Wait::Futex {
            owner,
            owner_name,
            runtime_object,
            ..
        }) => {
            assert_eq!(*owner, Some(12));
            assert_eq!(owner_name.as_deref(), Some("spinner"));
            assert_eq!(runtime_object.as_deref(), Some("waiting for the GIL"));
        }
        w => panic!("{w:?}"),
    }
    assert_eq!(facts[1].holds, ["the GIL"]);
    // A name the target chose is escaped.
    assert_eq!(
        facts[1].stack[1].file.as_deref(),
        Some("/srv/app/\\x1b[31mevil.py")
    );
    assert!(
        facts[2]
            .lang_note
            .as_deref()
            .unwrap()
            .starts_with("no Python frames: not a Python thread"),
        "{:?}",
        facts[2].lang_note
    );
}

#[test]
fn a_stripped_interpreter_waiting_on_the_gil_words_waits_for_the_holder() {
    // Debian's python3.11: no name for take_gil, but the futex is inside the GIL's state.
    let mut waiter = python_thread_facts(11, "worker", false);
    waiter.wait = Some(Wait::futex(
        0x9_0040,
        "FUTEX_WAIT_BITSET_PRIVATE".into(),
        None,
        Some(0),
    ));
    let mut facts = vec![waiter, python_thread_facts(12, "spinner", false)];
    apply(
        &mut facts,
        &BTreeMap::from([(1, RuntimeView::Python(snapshot(Some(12))))]),
    );
    assert!(
        matches!(
            &facts[0].wait,
            Some(Wait::Futex {
                owner: Some(12),
                ..
            })
        ),
        "{:?}",
        facts[0].wait
    );
    // A futex elsewhere (a queue's lock) is not the GIL.
    assert!(matches!(
        &facts[1].wait,
        Some(Wait::Futex {
            owner: None,
            runtime_object: None,
            ..
        })
    ));
}

#[test]
fn inlined_eval_frames_at_one_address_count_once() {
    // CPython 3.8 built with -O2: blazesym reports an eval frame and a same-named inlined one
    // at one address; 3.8 runs one Python frame per eval call.
    let mut t = ThreadFacts::new(1, 11, "worker".into(), ThreadState::Blocked);
    let at = |addr: u64, f: &str, inlined: bool| Frame {
        addr,
        function: Some(f.into()),
        inlined,
        ..Frame::default()
    };
    t.stack = vec![
        at(0x10, "sem_wait", false),
        at(0x20, "_PyEval_EvalFrameDefault", true),
        at(0x20, "_PyEval_EvalFrameDefault", false),
        at(0x30, "function_code_fastcall", false),
        at(0x40, "_PyEval_EvalFrameDefault", true),
        at(0x40, "_PyEval_EvalFrameDefault", false),
        at(0x50, "t_bootstrap", false),
    ];
    let snap = PySnapshot {
        threads: vec![PyThread {
            tid: Some(11),
            tstate: 0x1000,
            frames: vec![py("get", "q.py", 1, true), py("run", "w.py", 2, true)],
            why_empty: None,
            incomplete: None,
        }],
        gil: Gil::Free,
        gil_holder: None,
        gil_range: None,
        notes: vec![],
    };
    let mut facts = vec![t];
    apply(
        &mut facts,
        &BTreeMap::from([(1, RuntimeView::Python(snap))]),
    );
    let names: Vec<&str> = facts[0]
        .stack
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "sem_wait",
            "get",
            "function_code_fastcall",
            "run",
            "t_bootstrap"
        ],
        "{:?}",
        facts[0].lang_note
    );
}
