"""fd_netns — sockets in a network namespace of their own, for the `waits` integration test.

Run under `unshare --net`: the sockets live in a namespace that stallprobe is not in, so
describing them has to read /proc/PID/net (not /proc/net) and ask sock_diag from inside that
namespace. Sets up, in this one process:

  tcp6_fd / tcp6_peer_fd   a TCP connection over [::1] (the loopback is brought up by the
                           caller), accepted, nothing sent
  udp6_fd                  a UDP socket bound to [::1], connected to tcp6_port's neighbour
  client_fd / server_fd    a unix stream connection to the bound path argv[1]: the client's
                           peer is server_fd (ours), whose bound name is the path

Prints `key=value` facts, `ready`, then sleeps until killed.
"""

import os
import signal
import socket
import sys

path = sys.argv[1]

lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
lst.bind(("::1", 0))
lst.listen()
port = lst.getsockname()[1]
cli = socket.create_connection(("::1", port))
srv, _ = lst.accept()

udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
udp.connect(("::1", 9))

try:
    os.unlink(path)
except FileNotFoundError:
    pass
ulst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ulst.bind(path)
ulst.listen()
ucli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ucli.connect(path)
usrv, _ = ulst.accept()
ucli.send(b"hello")

print(f"tcp6_fd={cli.fileno()}")
print(f"tcp6_peer_fd={srv.fileno()}")
print(f"tcp6_port={port}")
print(f"tcp6_client_port={cli.getsockname()[1]}")
print(f"udp6_fd={udp.fileno()}")
print(f"udp6_port={udp.getsockname()[1]}")
print(f"client_fd={ucli.fileno()}")
print(f"server_fd={usrv.fileno()}")
print("ready", flush=True)
while True:
    signal.pause()
