"""queue_producer — failure 3, "producer left alone", with queue.Queue(maxsize=1).

The "producer" thread puts items into a queue.Queue(maxsize=1), looking at a stop Event
between items. The "consumer" thread dies on an exception at its 3rd item (a bug), so
the queue stays full and the producer blocks in q.put() forever (a lock acquire: futex).
SIGTERM is blocked in every thread; the main thread, renamed "main", waits for it with
signal.sigwait(), sets the stop Event and joins the producer: forever.

Expected after SIGTERM + grace: stalled; flagged exactly "main" and "producer", both blocked
in futex (CPython's native stack shows only the interpreter). "consumer" has exited.

`--ready`: print `ready` on stdout once the consumer is gone and the producer is blocked.
Without it, nothing is printed on stdout.
"""

import ctypes
import itertools
import queue
import signal
import sys
import threading
import time

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def set_os_thread_name(name):
    """Python 3.11 does not name OS threads: do it for the calling thread."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


q = queue.Queue(maxsize=1)
stop = threading.Event()


def produce():
    set_os_thread_name("producer")
    for n in itertools.count():
        if stop.is_set():  # looked at between items only
            break
        q.put(n)  # the queue stays full: blocks forever


def consume():
    set_os_thread_name("consumer")
    for n in range(3):
        item = q.get()
        if n == 2:
            raise RuntimeError(f"consumer: cannot handle item {item}")  # the bug


def main():
    ready = sys.argv[1:2] == ["--ready"]
    set_os_thread_name("main")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the threads
    producer = threading.Thread(target=produce, name="producer")
    consumer = threading.Thread(target=consume, name="consumer")
    consumer.start()
    producer.start()
    if ready:
        consumer.join()
        while not q.full():
            time.sleep(0.005)
        time.sleep(0.05)
        print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    print("queue_producer: SIGTERM: stopping the producer", file=sys.stderr)
    stop.set()
    producer.join()  # never returns


if __name__ == "__main__":
    main()
