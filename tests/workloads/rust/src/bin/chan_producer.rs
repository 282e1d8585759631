//! chan_producer — failure 3, "producer left alone", with std's bounded `sync_channel`.
//!
//! The main thread, renamed "producer", sends items into a `sync_channel(2)`. A scoped
//! "consumer" thread borrows the receiver (behind a Mutex, as a pool of consumers would share
//! it), takes 3 items and panics on the 4th (a bug). The receiver lives in main's scope, so the
//! channel is not disconnected: once 2 items are buffered the producer blocks in
//! `SyncSender::send` forever. SIGTERM is blocked in every
//! thread; a "sig-watch" thread takes it with sigwait(), sets STOP (looked at by the producer
//! between items only) and exits.
//!
//! Expected after SIGTERM + grace: stalled; flagged exactly "producer", blocked in futex, stack
//! through `chan_producer::produce`. "consumer" (panicked) and "sig-watch" have exited.
//!
//! `--ready`: print `ready` on stdout once the consumer is gone and the channel is full. Without
//! it, nothing is printed on stdout.

use std::{
    io::Write,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread,
    time::Duration,
};

static STOP: AtomicBool = AtomicBool::new(false);

fn set_thread_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Block SIGTERM in the calling thread (and every thread it starts afterwards).
fn block_sigterm() -> libc::sigset_t {
    // SAFETY: plain signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn watch_for_sigterm(set: libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: sigwait on a set that is blocked in every thread.
    unsafe { libc::sigwait(&set, &mut sig) };
    STOP.store(true, Ordering::SeqCst);
    eprintln!("chan_producer: SIGTERM: stop requested");
}

#[inline(never)]
fn consume(rx: &Mutex<Receiver<u64>>) {
    for n in 0.. {
        let item = rx.lock().unwrap().recv().expect("channel open");
        if n == 3 {
            panic!("consumer: cannot handle item {item}"); // the bug
        }
    }
}

#[inline(never)]
fn produce(tx: &SyncSender<u64>) -> u64 {
    let mut sent = 0;
    while !STOP.load(Ordering::SeqCst) {
        // Blocks forever once the buffer is full: nobody receives any more.
        if tx.send(sent).is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

fn main() {
    let ready = std::env::args().nth(1).as_deref() == Some("--ready");
    set_thread_name("producer");
    let set = block_sigterm();
    thread::Builder::new()
        .name("sig-watch".into())
        .spawn(move || watch_for_sigterm(set))
        .unwrap();

    let (tx, rx) = sync_channel::<u64>(2);
    let rx = Mutex::new(rx); // shared by the consumers; outlives them
    thread::scope(|s| {
        let consumer = thread::Builder::new()
            .name("consumer".into())
            .spawn_scoped(s, || consume(&rx))
            .unwrap();
        if ready {
            // Feed the consumer until it has panicked, fill the buffer, then announce.
            let mut n = 0;
            while !consumer.is_finished() {
                let _ = tx.try_send(n);
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
            while tx.try_send(n).is_ok() {
                n += 1;
            }
            println!("ready");
            std::io::stdout().flush().unwrap();
        }
        let sent = produce(&tx);
        eprintln!("chan_producer: sent {sent} items");
        STOP.store(true, Ordering::SeqCst);
    });
}
