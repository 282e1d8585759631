"""handler_recv — failure 1, "blocked inside a handler": a socket recv with no timeout.

The "handler" thread takes tasks from a queue and runs them one at a time, looking at a stop
Event between tasks. The "fetch" task sends a request to a peer (the other end of a
socketpair, which nobody reads or answers) and calls sock.recv() with no timeout: it never
returns. SIGTERM is blocked in every thread; the main thread, renamed "main", waits for it
with signal.sigwait(), sets the stop Event and joins the handler: forever.

Expected after SIGTERM + grace: stalled; flagged exactly "handler" (blocked in recvfrom on the
socket) and "main" (blocked in futex, joining). CPython's native stack shows only the
interpreter.

`--ready`: print `peer_fd=N` and `ready` on stdout once the handler is inside recv().
Without it, nothing is printed on stdout.
"""

import ctypes
import queue
import signal
import socket
import sys
import threading

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_os_thread_name(name):
    """Python 3.11 does not name OS threads: do it for the calling thread."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


ours, peer = socket.socketpair()  # `peer` is held open and never used
tasks = queue.Queue()
stop = threading.Event()
in_fetch = threading.Event()


def fetch_status():
    ours.sendall(b"GET /status\n")
    in_fetch.set()
    return ours.recv(4096)  # the peer never answers: blocks forever


def run_handler():
    set_os_thread_name("handler")
    while not stop.is_set():  # looked at between tasks only
        task = tasks.get()
        if task == "fetch":
            fetch_status()


def main():
    ready = sys.argv[1:2] == ["--ready"]
    set_os_thread_name("main")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the handler
    for task in ["log", "log", "fetch", "log"]:
        tasks.put(task)
    handler = threading.Thread(target=run_handler, name="handler")
    handler.start()
    if ready:
        in_fetch.wait()
        print(f"peer_fd={ours.fileno()}\nready", flush=True)
    signal.sigwait({signal.SIGTERM})
    print("handler_recv: SIGTERM: stopping the handler", file=sys.stderr)
    stop.set()
    handler.join()  # never returns


if __name__ == "__main__":
    main()
