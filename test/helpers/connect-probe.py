"""Connects once per round, each round started by a file appearing (argv: file prefix, vip, port, rounds); prints
"round N connected" or "round N <errno name>"."""
import errno
import os
import socket
import sys
import time

prefix, vip, port, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
for r in range(1, rounds + 1):
    while not os.path.exists(f"{prefix}{r}"):
        time.sleep(0.01)
    try:
        with socket.create_connection((vip, port), timeout=10) as s:
            s.sendall(b"hi")
            what = "connected" if s.recv(8) == b"hi" else "no-echo"
    except OSError as e:
        what = errno.errorcode.get(e.errno, str(e.errno))
    print(f"round {r} {what}", flush=True)
