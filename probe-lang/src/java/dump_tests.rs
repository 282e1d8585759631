//! The parser on dumps recorded from OpenJDK 17.0.15 here (`jstack -l`, saved under
//! `tests/data/`): `JavaStacks` (tests/workloads) before and after SIGTERM, and a
//! java.util.concurrent deadlock.

use super::*;
use proptest::prelude::*;

const MONITOR: &str = include_str!("../../tests/data/jdk17-monitor-deadlock.txt");
const HOOK: &str = include_str!("../../tests/data/jdk17-shutdown-hook.txt");
const JUC: &str = include_str!("../../tests/data/jdk17-juc-deadlock.txt");

fn file(f: &JavaFrame) -> (&str, Option<u32>) {
    match &f.source {
        Source::File { file, line } => (file.as_str(), *line),
        _ => ("", None),
    }
}

#[test]
fn threads_headers_and_states() {
    let d = parse_thread_dump(MONITOR);
    assert_eq!(
        d.vm.as_deref(),
        Some(
            "Full thread dump OpenJDK 64-Bit Server VM (17.0.15+6-Debian-1deb12u1 mixed mode, sharing):"
        )
    );
    assert_eq!(d.threads.len(), 24);
    let a = d.thread("locker-a").unwrap();
    assert_eq!(a.number, Some(13));
    assert!(!a.daemon);
    assert_eq!(a.nid, Some(0x5c31));
    assert_eq!(a.vm_state, "waiting for monitor entry");
    assert_eq!(a.state.as_deref(), Some("BLOCKED (on object monitor)"));
    let rh = d.thread("Reference Handler").unwrap();
    assert!(rh.daemon);
    assert_eq!(rh.number, Some(2));
    // VM threads: no number, no Java state, no frames.
    let vm = d.thread("VM Thread").unwrap();
    assert_eq!((vm.number, vm.state.as_ref()), (None, None));
    assert_eq!(vm.nid, Some(0x5c24));
    assert_eq!(vm.vm_state, "runnable");
    assert!(vm.frames.is_empty());
    assert_eq!(d.thread_by_nid(0x5c33).unwrap().name, "holder");
    // The "Java stack information" part of the deadlock report adds no threads.
    assert_eq!(d.threads.iter().filter(|t| t.name == "locker-a").count(), 1);
}

#[test]
fn frames_in_every_source_form() {
    let d = parse_thread_dump(MONITOR);
    let a = d.thread("locker-a").unwrap();
    assert_eq!(a.frames.len(), 6);
    assert_eq!(a.frames[0].method, "JavaStacks.lockBoth");
    assert_eq!(file(&a.frames[0]), ("JavaStacks.java", Some(26)));
    assert_eq!(a.frames[0].module, None);
    assert_eq!(
        a.frames[2].method,
        "JavaStacks$$Lambda$2/0x00007efd34001000.run"
    );
    assert_eq!(a.frames[2].source, Source::Unknown);
    let last = a.frames.last().unwrap();
    assert_eq!(last.method, "java.lang.Thread.run");
    assert_eq!(last.module.as_deref(), Some("java.base@17.0.15"));
    assert_eq!(file(last), ("Thread.java", Some(840)));
    let h = d.thread("holder").unwrap();
    assert_eq!(h.frames[0].method, "java.lang.Thread.sleep");
    assert_eq!(h.frames[0].source, Source::Native);
    assert_eq!(h.frames[0].module.as_deref(), Some("java.base@17.0.15"));
}

#[test]
fn monitors_held_and_waited_for_with_owners() {
    let d = parse_thread_dump(MONITOR);
    let a = d.thread("locker-a").unwrap();
    let b = d.thread("locker-b").unwrap();
    let wa = d.wait_of(a).unwrap();
    assert_eq!(wa.kind, LockKind::WaitingToLock);
    assert_eq!(wa.lock.address, Some(0x69ec1aa78));
    assert_eq!(wa.lock.class.as_deref(), Some("java.lang.Object"));
    assert_eq!(wa.owner.as_deref(), Some("locker-b"));
    assert_eq!(d.wait_of(b).unwrap().owner.as_deref(), Some("locker-a"));
    assert_eq!(
        a.monitors_held()
            .iter()
            .map(|l| l.address)
            .collect::<Vec<_>>(),
        [Some(0x69ec1aa68)]
    );
    // Parked on a ReentrantLock that "holder" has among its ownable synchronizers.
    let p = d.wait_of(d.thread("parker").unwrap()).unwrap();
    assert_eq!(p.kind, LockKind::ParkingFor);
    assert_eq!(
        p.lock.class.as_deref(),
        Some("java.util.concurrent.locks.ReentrantLock$NonfairSync")
    );
    assert_eq!(p.owner.as_deref(), Some("holder"));
    // In Object.wait(): the monitor is released, although the dump prints `- locked` for it.
    let w = d.thread("waiter").unwrap();
    let ww = d.wait_of(w).unwrap();
    assert_eq!(ww.kind, LockKind::WaitingOn);
    assert_eq!(ww.owner, None);
    assert!(w.monitors_held().is_empty());
    assert!(d.thread("holder").unwrap().monitors_held().is_empty());
    let waits = waits(&d);
    assert_eq!(waits["locker-a"].owner.as_deref(), Some("locker-b"));
    assert!(!waits.contains_key("holder"), "sleeping is not a lock wait");
}

#[test]
fn the_jvms_deadlock_report() {
    let d = parse_thread_dump(MONITOR);
    assert_eq!(d.deadlocks.len(), 1);
    let links = &d.deadlocks[0].links;
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].thread, "locker-a");
    assert_eq!(links[0].held_by.as_deref(), Some("locker-b"));
    assert_eq!(links[0].object, Some(0x69ec1aa78));
    assert_eq!(links[0].class.as_deref(), Some("java.lang.Object"));
    assert!(
        links[0]
            .waiting_for
            .starts_with("waiting to lock monitor 0x00007efd1005f430")
    );
    assert_eq!(links[1].thread, "locker-b");
    assert_eq!(links[1].held_by.as_deref(), Some("locker-a"));

    let j = parse_thread_dump(JUC);
    let links = &j.deadlocks[0].links;
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].thread, "juc-1");
    assert_eq!(links[0].object, Some(0x69ec194f0));
    assert_eq!(
        links[0].class.as_deref(),
        Some("java.util.concurrent.locks.ReentrantLock$NonfairSync")
    );
    assert_eq!(links[0].held_by.as_deref(), Some("juc-2"));
    let w = j.wait_of(j.thread("juc-1").unwrap()).unwrap();
    assert_eq!(w.owner.as_deref(), Some("juc-2"));
}

#[test]
fn the_blocked_shutdown_hook() {
    let d = parse_thread_dump(HOOK);
    let h = d.thread("shutdown-hook").unwrap();
    assert_eq!(h.state.as_deref(), Some("BLOCKED (on object monitor)"));
    assert_eq!(h.frames[0].method, "JavaStacks.lambda$main$1");
    assert_eq!(file(&h.frames[0]), ("JavaStacks.java", Some(74)));
    let w = d.wait_of(h).unwrap();
    assert_eq!(w.kind, LockKind::WaitingToLock);
    assert_eq!(w.owner.as_deref(), Some("locker-a"));
    assert_eq!(d.deadlocks.len(), 1, "the hook is not part of the cycle");
}

#[test]
fn odd_headers() {
    let t = parse_header(
        "\"a \"quoted\" name\" #7 daemon prio=5 os_prio=0 tid=0x1 nid=0x10 runnable  [0x0]",
    )
    .unwrap();
    assert_eq!(t.name, "a \"quoted\" name");
    assert_eq!(t.nid, Some(16));
    assert_eq!(t.vm_state, "runnable");
    // JDK 19+ prints nid in decimal.
    let t = parse_header("\"main\" #1 [4242] prio=5 os_prio=0 cpu=1ms elapsed=1s tid=0x1 nid=4242 waiting on condition  [0x0]").unwrap();
    assert_eq!(t.nid, Some(4242));
    assert!(parse_header("\"locker-a\":").is_none());
    assert_eq!(
        parse_frame("Foo.bar(Foo.java)").unwrap().source,
        Source::File {
            file: "Foo.java".into(),
            line: None
        }
    );
    assert!(parse_frame("no parens").is_none());
    let l = parse_lock_line("waiting on <no object reference available>").unwrap();
    assert_eq!(l.lock.address, None);
}

proptest! {
    #[test]
    fn garbage_never_panics(s in "(\"[a-z\" ]{0,8}\" #?[0-9]{0,3} (daemon )?nid=0x[0-9a-g]{0,9} [a-z ]{0,10}\n|\t(at|- locked|- waiting to lock|- parking to wait for) [<>0-9a-fx(). a-z/@:]{0,40}\n|Found one Java-level deadlock:\n|  which is held by \"[a-z]{0,3}\n|\"[a-z]{0,4}\":\n|   Locked ownable synchronizers:\n|\t- [<>0-9a-fx a-z()]{0,30}\n|  waiting [a-z0-9 ,(x]{0,40}\n|[^\n]{0,30}\n){0,40}") {
        let d = parse_thread_dump(&s);
        for t in &d.threads {
            let _ = d.wait_of(t);
        }
    }

    #[test]
    fn cut_dumps_never_panic(cut in 0usize..MONITOR.len()) {
        let mut at = cut;
        while !MONITOR.is_char_boundary(at) {
            at -= 1;
        }
        let _ = parse_thread_dump(&MONITOR[..at]);
    }
}
