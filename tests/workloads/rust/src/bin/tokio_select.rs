//! tokio_select — failure 1 on tokio: a task makes a blocking std call inside `tokio::select!`.
//!
//! A multi-thread runtime with 2 workers. The spawned `serve` task loops on
//! `tokio::select!` over SIGTERM (`tokio::signal::unix`) and a 50 ms interval. Every 4th tick
//! its handler refreshes a value from a peer with a plain `std::net::TcpStream::read` (no
//! timeout) — a blocking call on a runtime worker; the peer (accepted in main, never written
//! to) never answers. The worker running the task is stuck in the read, so the select! is never
//! polled again and the SIGTERM branch never runs, even though the other worker is free. main
//! waits for the task in `block_on`.
//!
//! Expected after SIGTERM + grace: stalled; flagged exactly one thread, a
//! "tokio-runtime-worker" (comm "tokio-runtime-w") blocked in recvfrom on the socket, stack
//! through `tokio_select::refresh_from_peer`. The other worker and main (parked in block_on) are
//! the tokio runtime's own idle threads: role "runtime", not flagged.
//!
//! `--ready`: print `peer_port=N` and `ready` on stdout as the task enters the blocking read.
//! Without it, nothing is printed on stdout.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::atomic::{AtomicBool, AtomicU16, Ordering},
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

static READY_MODE: AtomicBool = AtomicBool::new(false);
static PEER_PORT: AtomicU16 = AtomicU16::new(0);

#[inline(never)]
fn refresh_from_peer(peer: &mut TcpStream) -> std::io::Result<u64> {
    peer.write_all(b"GET /config\n")?;
    if READY_MODE.swap(false, Ordering::SeqCst) {
        // Announced from here, not from main after a tokio sleep: with this worker stuck in
        // the read, that sleep never completed (nobody was left driving the runtime's timers).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "peer_port={}\nready", PEER_PORT.load(Ordering::SeqCst));
        let _ = out.flush();
    }
    let mut buf = [0u8; 64];
    let n = peer.read(&mut buf)?; // blocking read on a runtime worker: never returns
    Ok(buf[..n].iter().map(|&b| b as u64).sum())
}

#[inline(never)]
async fn serve(mut peer: TcpStream) -> u64 {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = term.recv() => {
                eprintln!("tokio_select: SIGTERM: stopping");
                break;
            }
            _ = tick.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(4) {
                    match refresh_from_peer(&mut peer) {
                        Ok(v) => ticks += v,
                        Err(e) => eprintln!("tokio_select: refresh failed: {e}"),
                    }
                }
            }
        }
    }
    ticks
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    READY_MODE.store(
        std::env::args().nth(1).as_deref() == Some("--ready"),
        Ordering::SeqCst,
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    PEER_PORT.store(port, Ordering::SeqCst);
    let ours = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_peer_side, _) = listener.accept().expect("accept"); // held open, never written to

    let server = tokio::spawn(serve(ours));
    let ticks = server.await.expect("serve task");
    eprintln!("tokio_select: served {ticks} ticks");
}
