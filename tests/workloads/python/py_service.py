"""py_service — a Python service that does not stop, for the Python-frames view.

Threads (OS threads named after them):
- "consumer" takes jobs from a queue in `Consumer.next_job` (queue.get() with no timeout): its
  producer is gone, so it waits forever (blocked in futex, GIL released).
- "handler" asks a peer for its status in `fetch_status` (sock.recv() with no timeout) on a
  socketpair nobody answers (blocked in recvfrom, GIL released).
- "heartbeat" ticks in `beat` (time.sleep(0.05) in a loop).
On SIGTERM (blocked everywhere; the main thread, "main", waits for it with signal.sigwait())
main starts "flusher", which calls `flush_to_disk`: a C library call made WITH THE GIL HELD (as
an extension that forgot Py_BEGIN_ALLOW_THREADS does; here ctypes.PyDLL + libc read() on a pipe
nobody writes), then main joins the consumer: forever. From then on "heartbeat" wakes from its
sleep and waits for the GIL in take_gil, held by "flusher", forever.

Expected after SIGTERM + grace: stalled; flagged "main", "consumer", "handler", "flusher",
"heartbeat". With Python frames: consumer in Consumer.next_job, handler in fetch_status,
flusher in flush_to_disk, heartbeat in beat, main in shutdown (all in py_service.py); heartbeat
waits for the GIL held by flusher.

`--ready`: print `ready` on stdout once the handler is inside recv().
"""

import ctypes
import os
import queue
import signal
import socket
import sys
import threading
import time

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
# The same libc, called without releasing the GIL.
_libc_holding_gil = ctypes.PyDLL(None)


def set_os_thread_name(name):
    """Python before 3.12 does not name OS threads: do it for the calling thread."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


ours, peer = socket.socketpair()  # `peer` is held open and never used
jobs = queue.Queue()
in_fetch = threading.Event()
never_written_r, never_written_w = os.pipe()


class Consumer:
    def next_job(self):
        return jobs.get()  # the producer is gone: forever

    def run(self):
        set_os_thread_name("consumer")
        while True:
            self.next_job()


def fetch_status():
    ours.sendall(b"GET /status\n")
    in_fetch.set()
    return ours.recv(4096)  # the peer never answers: forever


def run_handler():
    set_os_thread_name("handler")
    fetch_status()


def beat():
    time.sleep(0.05)


def run_heartbeat():
    set_os_thread_name("heartbeat")
    while True:
        beat()


def flush_to_disk():
    buf = ctypes.create_string_buffer(1)
    _libc_holding_gil.read(never_written_r, buf, 1)  # blocks with the GIL held: forever


def run_flusher():
    set_os_thread_name("flusher")
    flush_to_disk()


def shutdown(consumer_thread):
    threading.Thread(target=run_flusher, name="flusher", daemon=True).start()
    consumer_thread.join()  # never returns


def main():
    ready = sys.argv[1:2] == ["--ready"]
    set_os_thread_name("main")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the threads
    consumer = threading.Thread(target=Consumer().run, name="consumer")
    consumer.start()
    threading.Thread(target=run_handler, name="handler", daemon=True).start()
    threading.Thread(target=run_heartbeat, name="heartbeat", daemon=True).start()
    in_fetch.wait()
    if ready:
        print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    print("py_service: SIGTERM: flushing and stopping the consumer", file=sys.stderr)
    shutdown(consumer)


if __name__ == "__main__":
    main()
