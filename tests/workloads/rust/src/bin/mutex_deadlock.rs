//! mutex_deadlock — failure 4, lock-order deadlock with std `Mutex`.
//!
//! "locker-a" locks A then B, "locker-b" locks B then A; a barrier makes each hold its first
//! lock before asking for the second, so they deadlock at once. The main thread, renamed
//! "main", blocks SIGTERM everywhere, waits for it with sigwait(), then sets STOP and joins the
//! lockers: forever.
//!
//! Expected after SIGTERM + grace: stalled; flagged exactly "locker-a", "locker-b" and "main",
//! all blocked in futex: the lockers in `mutex_deadlock::take_second`, main in
//! `mutex_deadlock::shutdown_and_join` (JoinHandle::join).
//!
//! `--ready`: print `ready` on stdout once both lockers hold their first lock. Without it,
//! nothing is printed on stdout.

use std::{
    io::Write,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

static STOP: AtomicBool = AtomicBool::new(false);

fn set_thread_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

struct Accounts {
    a: Mutex<u64>,
    b: Mutex<u64>,
}

#[inline(never)]
fn take_second(second: &Mutex<u64>, amount: u64) -> u64 {
    let mut g = second.lock().unwrap(); // the other thread holds it and waits for ours
    *g += amount;
    *g
}

#[inline(never)]
fn transfer_a_to_b(acc: &Accounts, barrier: &Barrier) {
    while !STOP.load(Ordering::SeqCst) {
        let mut a = acc.a.lock().unwrap();
        barrier.wait();
        *a -= 1;
        take_second(&acc.b, 1);
    }
}

#[inline(never)]
fn transfer_b_to_a(acc: &Accounts, barrier: &Barrier) {
    while !STOP.load(Ordering::SeqCst) {
        let mut b = acc.b.lock().unwrap();
        barrier.wait();
        *b -= 1;
        take_second(&acc.a, 1);
    }
}

#[inline(never)]
fn shutdown_and_join(workers: Vec<JoinHandle<()>>) -> usize {
    STOP.store(true, Ordering::SeqCst);
    let mut joined = 0;
    for w in workers {
        let _ = w.join(); // locker-a never ends
        joined += 1;
    }
    joined
}

fn main() {
    let ready = std::env::args().nth(1).as_deref() == Some("--ready");
    set_thread_name("main");
    // SAFETY: plain signal-set manipulation; SIGTERM blocked in main before any thread starts.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let acc = Arc::new(Accounts {
        a: Mutex::new(1000),
        b: Mutex::new(1000),
    });
    let barrier = Arc::new(Barrier::new(3));
    let (acc1, bar1) = (acc.clone(), barrier.clone());
    let a = thread::Builder::new()
        .name("locker-a".into())
        .spawn(move || transfer_a_to_b(&acc1, &bar1))
        .unwrap();
    let (acc2, bar2) = (acc.clone(), barrier.clone());
    let b = thread::Builder::new()
        .name("locker-b".into())
        .spawn(move || transfer_b_to_a(&acc2, &bar2))
        .unwrap();
    barrier.wait(); // both hold their first lock now
    if ready {
        println!("ready");
        std::io::stdout().flush().unwrap();
    }
    let mut sig = 0;
    // SAFETY: sigwait on a set blocked in every thread.
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("mutex_deadlock: SIGTERM: stopping the lockers");
    let n = shutdown_and_join(vec![a, b]);
    eprintln!("mutex_deadlock: joined {n} threads");
}
