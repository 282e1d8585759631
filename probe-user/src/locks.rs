//! What a futex wait is waiting for: which kind of lock, who holds it, who last woke its
//! waiters — and the deadlock cycles that follow from that.
//!
//! Owners come from the lock itself, read from the target's memory:
//! - PI futexes (FUTEX_LOCK_PI, LOCK_PI2, WAIT_REQUEUE_PI) carry the owner's tid in the word;
//! - glibc's `pthread_mutex_t` keeps its owner tid in `__owner`, 8 bytes after the futex word
//!   (`struct __pthread_mutex_s { int __lock; unsigned __count; int __owner; ... }`);
//! - a `pthread_join` waits on the joined thread's tid word.
//!
//! An owner is only believed when it is a live thread of the same process.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    report::{CycleObject, CycleThread, Deadlock, ThreadState, Wait, Waker},
    tracker::ThreadFacts,
};

/// `FUTEX_TID_MASK`: the owner tid bits of a PI futex word.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// What kind of object a futex wait is on, from the op and the stack.
pub fn futex_object(op: &str, stack: &[crate::report::Frame]) -> &'static str {
    if op.starts_with("FUTEX_LOCK_PI") || op.starts_with("FUTEX_WAIT_REQUEUE_PI") {
        return "pi_mutex";
    }
    let funcs: Vec<&str> = stack
        .iter()
        .take(12)
        .filter_map(|f| f.function.as_deref())
        .collect();
    let has = |needles: &[&str]| funcs.iter().any(|f| needles.iter().any(|n| f.contains(n)));
    if has(&[
        "ObjectMonitor::enter",
        "ObjectMonitor::EnterI",
        "ObjectSynchronizer::enter",
    ]) {
        "java_monitor"
    } else if has(&["ObjectMonitor::wait", "ObjectSynchronizer::wait"]) {
        "java_object_wait"
    } else if has(&["Parker::park", "Unsafe_Park"]) {
        "java_park"
    } else if has(&["FutexEmulation::Wait"]) {
        "js_atomics_wait"
    } else if has(&["pthread_join", "clockjoin", "timedjoin"]) {
        "thread_join"
    } else if has(&[
        "pthread_mutex_lock",
        "pthread_mutex_timedlock",
        "pthread_mutex_clocklock",
        "__lll_lock_wait",
    ]) {
        "pthread_mutex"
    } else if has(&[
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "pthread_cond_clockwait",
        "__pthread_cond_wait",
    ]) {
        "pthread_cond"
    } else if has(&["pthread_rwlock"]) {
        "pthread_rwlock"
    } else if has(&["sem_wait", "sem_timedwait", "sem_clockwait"]) {
        "semaphore"
    } else if has(&["mutex::futex::Mutex", "Mutex>::lock_contended"]) {
        "rust_mutex"
    } else if has(&["condvar::futex::Condvar", "Condvar>::wait"]) {
        "rust_condvar"
    } else if has(&["runtime.futexsleep", "runtime.notesleep"]) {
        "go_runtime_note"
    } else {
        "futex"
    }
}

/// What a futex wait is about: the kind of object, the thread holding it, the thread that
/// last woke its waiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FutexFinding {
    /// pthread_mutex, pi_mutex, thread_join, pthread_cond, rust_mutex ...
    pub object: &'static str,
    /// (tid, name) of the holder (lock owner, or the thread being joined).
    pub owner: Option<(u32, String)>,
    pub last_woken_by: Option<Waker>,
}

/// For each thread (same order), what its futex wait is about; `None` for other threads.
///
/// `read_u32(pid, addr)` reads the target's memory; wakers come from each thread's
/// [`ThreadFacts::last_wake`].
pub fn futex_findings(
    threads: &[ThreadFacts],
    read_u32: impl Fn(u32, u64) -> Option<u32>,
    now_ns: u64,
) -> Vec<Option<FutexFinding>> {
    let live: BTreeMap<(u32, u32), &str> = threads
        .iter()
        .filter(|t| t.state != ThreadState::Exited)
        .map(|t| ((t.pid, t.tid), t.name.as_str()))
        .collect();
    threads
        .iter()
        .map(|t| {
            let Some(Wait::Futex {
                addr, op, value, ..
            }) = &t.wait
            else {
                return None;
            };
            let kind = futex_object(op, &t.stack);
            let candidate = match kind {
                "pi_mutex" => value.map(|v| v & FUTEX_TID_MASK),
                "thread_join" => *value,
                // Locked (word != 0): the owner is in `__owner`.
                "pthread_mutex" if value.is_some_and(|v| v != 0) => read_u32(t.pid, *addr + 8),
                _ => None,
            };
            let owner = candidate
                .filter(|&o| o != 0 && o != t.tid)
                .and_then(|o| live.get(&(t.pid, o)).map(|n| (o, n.to_string())));
            let last_woken_by = threads
                .iter()
                .filter(|w| w.pid == t.pid && w.tid != t.tid)
                .filter_map(|w| w.last_wake.filter(|lw| lw.addr == *addr).map(|lw| (w, lw)))
                .max_by_key(|(_, lw)| lw.at_ns)
                .map(|(w, lw)| Waker {
                    tid: w.tid,
                    name: w.name.clone(),
                    ago_ms: now_ns.saturating_sub(lw.at_ns) / 1_000_000,
                });
            Some(FutexFinding {
                object: kind,
                owner,
                last_woken_by,
            })
        })
        .collect()
}

/// A futex wait with its finding filled in.
pub fn complete(wait: Wait, finding: Option<&FutexFinding>) -> Wait {
    match (wait, finding) {
        (
            Wait::Futex {
                addr,
                op,
                timeout_ms,
                value,
                ..
            },
            Some(f),
        ) => Wait::Futex {
            runtime_object: None,
            addr,
            op,
            timeout_ms,
            value,
            object: Some(f.object.to_string()),
            owner: f.owner.as_ref().map(|o| o.0),
            owner_name: f.owner.as_ref().map(|o| o.1.clone()),
            last_woken_by: f.last_woken_by.clone(),
        },
        (w, _) => w,
    }
}

/// Every cycle of the wait-for graph (each thread waits for at most one holder).
pub fn find_cycles(threads: &[ThreadFacts]) -> Vec<Deadlock> {
    let mut edge: BTreeMap<(u32, u32), (u32, String, u64)> = BTreeMap::new(); // waiter -> holder
    let mut name: BTreeMap<(u32, u32), String> = BTreeMap::new();
    for t in threads.iter().filter(|t| t.state != ThreadState::Exited) {
        name.insert((t.pid, t.tid), t.name.clone());
        if let Some(Wait::Futex {
            addr,
            owner: Some(o),
            object,
            ..
        }) = &t.wait
        {
            edge.insert(
                (t.pid, t.tid),
                (*o, object.clone().unwrap_or_default(), *addr),
            );
        }
    }
    let mut done: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut cycles = Vec::new();
    for &start in edge.keys() {
        if done.contains(&start) {
            continue;
        }
        // Walk until we leave the graph, hit a finished node, or come back onto this path.
        let mut path: Vec<(u32, u32)> = Vec::new();
        let mut cur = start;
        loop {
            if done.contains(&cur) {
                break;
            }
            if let Some(pos) = path.iter().position(|&p| p == cur) {
                let members = &path[pos..];
                let threads = members
                    .iter()
                    .map(|&(pid, tid)| CycleThread {
                        tid,
                        pid,
                        name: name.get(&(pid, tid)).cloned().unwrap_or_default(),
                    })
                    .collect();
                let objects = members
                    .iter()
                    .map(|m| {
                        let (holder, kind, addr) = edge[m].clone();
                        CycleObject {
                            kind,
                            addr,
                            waiter: m.1,
                            holder,
                        }
                    })
                    .collect();
                cycles.push(Deadlock { threads, objects });
                break;
            }
            path.push(cur);
            match edge.get(&cur) {
                Some((holder, _, _)) => cur = (cur.0, *holder),
                None => break,
            }
        }
        done.extend(path);
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{report::Frame, tracker::facts::LastWake};

    /// What the assembler does: fill the findings into the waits.
    fn annotate(
        ts: &mut [ThreadFacts],
        mem: impl Fn(u32, u64) -> Option<u32>,
        wakes: &[(u32, u64, u64)],
        now: u64,
    ) {
        for &(tid, addr, at_ns) in wakes {
            if let Some(t) = ts.iter_mut().find(|t| t.tid == tid) {
                t.last_wake = Some(LastWake { addr, at_ns });
            }
        }
        let found = futex_findings(ts, mem, now);
        for (t, f) in ts.iter_mut().zip(found) {
            t.wait = t.wait.take().map(|w| complete(w, f.as_ref()));
        }
    }

    fn waiting(
        tid: u32,
        name: &str,
        addr: u64,
        op: &str,
        value: u32,
        funcs: &[&str],
    ) -> ThreadFacts {
        ThreadFacts {
            syscall: Some("futex".into()),
            blocked_ms: Some(1000),
            wait: Some(Wait::futex(addr, op.into(), None, Some(value))),
            stack: funcs
                .iter()
                .map(|f| Frame {
                    function: Some(f.to_string()),
                    ..Frame::unknown(0)
                })
                .collect(),
            ..ThreadFacts::new(1, tid, name.into(), ThreadState::Blocked)
        }
    }

    fn owner(t: &ThreadFacts) -> Option<u32> {
        match &t.wait {
            Some(Wait::Futex { owner, .. }) => *owner,
            _ => None,
        }
    }

    #[test]
    fn two_pthread_mutexes_make_a_cycle() {
        let lock = ["__lll_lock_wait", "pthread_mutex_lock", "take_second_lock"];
        let mut ts = vec![
            waiting(10, "locker-a", 0xb000, "FUTEX_WAIT_PRIVATE", 2, &lock),
            waiting(11, "locker-b", 0xa000, "FUTEX_WAIT_PRIVATE", 2, &lock),
        ];
        // __owner of mutex b (0xb000 + 8) is locker-b, of mutex a is locker-a.
        let mem = |_pid: u32, addr: u64| match addr {
            0xb008 => Some(11),
            0xa008 => Some(10),
            _ => None,
        };
        annotate(&mut ts, mem, &[], 0);
        assert_eq!(owner(&ts[0]), Some(11));
        assert_eq!(owner(&ts[1]), Some(10));
        let c = find_cycles(&ts);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].threads.len(), 2);
        assert_eq!(c[0].objects.len(), 2);
        let d = c[0].describe();
        assert!(
            d.contains("locker-a (10) waits for pthread_mutex 0xb000 held by locker-b (11)"),
            "{d}"
        );
    }

    #[test]
    fn three_thread_cycle_and_a_bystander() {
        let lock = ["pthread_mutex_lock"];
        let mut ts = vec![
            waiting(1, "a", 0x100, "FUTEX_WAIT_PRIVATE", 2, &lock),
            waiting(2, "b", 0x200, "FUTEX_WAIT_PRIVATE", 2, &lock),
            waiting(3, "c", 0x300, "FUTEX_WAIT_PRIVATE", 2, &lock),
            waiting(4, "d", 0x100, "FUTEX_WAIT_PRIVATE", 2, &lock), // waits for a, not in cycle
        ];
        let mem = |_p: u32, addr: u64| match addr {
            0x108 => Some(2),
            0x208 => Some(3),
            0x308 => Some(1),
            _ => None,
        };
        annotate(&mut ts, mem, &[], 0);
        let c = find_cycles(&ts);
        assert_eq!(c.len(), 1);
        let tids: BTreeSet<u32> = c[0].threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn owner_must_be_a_live_thread_of_the_process() {
        let mut ts = vec![waiting(
            1,
            "a",
            0x100,
            "FUTEX_WAIT_PRIVATE",
            2,
            &["pthread_mutex_lock"],
        )];
        annotate(&mut ts, |_, _| Some(99999), &[], 0);
        assert_eq!(owner(&ts[0]), None);
    }

    #[test]
    fn pi_futex_owner_from_the_word_and_join_target() {
        let mut ts = vec![
            waiting(1, "a", 0x100, "FUTEX_LOCK_PI_PRIVATE", 0x8000_0002, &[]),
            waiting(
                2,
                "b",
                0x200,
                "FUTEX_WAIT",
                3,
                &["__pthread_clockjoin_ex", "main"],
            ),
            waiting(3, "c", 0x300, "FUTEX_WAIT_PRIVATE", 0, &["something"]),
        ];
        annotate(&mut ts, |_, _| None, &[(3, 0x300, 5_000_000)], 10_000_000);
        assert_eq!(owner(&ts[0]), Some(2));
        assert_eq!(owner(&ts[1]), Some(3));
        match &ts[1].wait {
            Some(Wait::Futex { object, .. }) => assert_eq!(object.as_deref(), Some("thread_join")),
            _ => unreachable!(),
        }
        match &ts[2].wait {
            Some(Wait::Futex { last_woken_by, .. }) => {
                assert!(last_woken_by.is_none(), "self-wakes are not reported")
            }
            _ => unreachable!(),
        }
        // a waits for b (PI), b joins c: no cycle.
        assert!(find_cycles(&ts).is_empty());
    }

    #[test]
    fn last_waker() {
        let mut ts = vec![
            waiting(
                1,
                "a",
                0x100,
                "FUTEX_WAIT_PRIVATE",
                0,
                &["pthread_cond_wait"],
            ),
            waiting(2, "b", 0x500, "FUTEX_WAIT_PRIVATE", 0, &[]),
            waiting(9, "c", 0x900, "FUTEX_WAIT_PRIVATE", 0, &[]),
        ];
        annotate(
            &mut ts,
            |_, _| None,
            &[(2, 0x100, 4_000_000), (9, 0x100, 1_000_000)],
            10_000_000,
        );
        match &ts[0].wait {
            Some(Wait::Futex {
                last_woken_by: Some(w),
                object,
                ..
            }) => {
                assert_eq!(w.tid, 2);
                assert_eq!(w.ago_ms, 6);
                assert_eq!(object.as_deref(), Some("pthread_cond"));
            }
            other => panic!("{other:?}"),
        }
    }
}
