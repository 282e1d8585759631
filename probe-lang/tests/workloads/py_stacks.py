"""py_stacks — Python threads parked in known places, for probe-lang's live CPython test.

  getter    queue.get() on a queue nobody fills: a lock acquire, GIL released
  receiver  sock.recv() on a socketpair nobody writes: recvfrom, GIL released
  dozer     time.sleep() in a loop: once the main thread spins, it waits in take_gil at the
            sleep line (the sleep returned, the GIL is not given back)
  main      a pure-Python loop with a switch interval of 1000 s: it keeps the GIL

Lines the test asserts carry `# @name` markers. Runs on CPython 3.8+. Prints `tid_<thread>=N`
facts, `ready`, then spins until killed.
"""

import queue
import socket
import sys
import threading
import time

started = {name: threading.Event() for name in ("getter", "receiver", "dozer")}
tids = {}


def get_item(q):
    tids["getter"] = threading.get_native_id()
    started["getter"].set()
    return q.get()  # @get


def receive(sock):
    tids["receiver"] = threading.get_native_id()
    started["receiver"].set()
    return sock.recv(1)  # @recv


def doze():
    tids["dozer"] = threading.get_native_id()
    started["dozer"].set()
    while True:
        time.sleep(0.05)  # @sleep


def spin():
    sys.setswitchinterval(1000)
    n = 0
    while True: n += 1  # @spin  # noqa: E701


def main():
    ours, peer = socket.socketpair()  # `peer` is kept open and never written
    q = queue.Queue()
    threads = [
        threading.Thread(target=get_item, args=(q,), name="getter", daemon=True),
        threading.Thread(target=receive, args=(ours,), name="receiver", daemon=True),
        threading.Thread(target=doze, name="dozer", daemon=True),
    ]
    for t in threads:
        t.start()
    for e in started.values():
        e.wait()
    tids["main"] = threading.get_native_id()
    for name, tid in sorted(tids.items()):
        print(f"tid_{name}={tid}")
    print("ready", flush=True)
    spin()  # @main


main()  # @module
