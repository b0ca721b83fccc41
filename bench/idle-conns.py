#!/usr/bin/python3
# Hold N idle NBD connections open: each one a libnbd handle that completed
# the handshake and NBD_OPT_GO. Prints "ready" once all are open, then waits
# for standard input to close (bench/bench.mjs reads the server's RSS meanwhile).
#   /usr/bin/python3 bench/idle-conns.py URI N
import sys

import nbd

uri, n = sys.argv[1], int(sys.argv[2])
handles = []
for _ in range(n):
    h = nbd.NBD()
    h.connect_uri(uri)
    handles.append(h)
print("ready", flush=True)
sys.stdin.read()
for h in handles:
    h.shutdown()
