"""A client that connects in rounds, each started by a file appearing (argv: file prefix, vip, port, denied vip,
rounds, rounds that also try a port nobody serves (comma-separated)). Per round: 20 echo connections to vip:port, one
connect to the denied vip, and (in the rounds named) one to a port nobody serves; prints one line per round."""
import errno
import os
import socket
import sys
import time

prefix, vip, port, denied, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
nosvc_rounds = {int(r) for r in sys.argv[6].split(",")} if len(sys.argv) > 6 else set()
print("ready", flush=True)


def attempt(host, p):
    t = time.monotonic()
    try:
        s = socket.create_connection((host, p), timeout=10)
        s.close()
        what = "connected"
    except OSError as e:
        what = errno.errorcode.get(e.errno, str(e.errno))
    return what, int((time.monotonic() - t) * 1000)


for r in range(1, rounds + 1):
    while not os.path.exists(f"{prefix}{r}"):
        time.sleep(0.02)
    ok = 0
    for i in range(20):
        with socket.create_connection((vip, port), timeout=10) as s:
            s.sendall(b"ping %d" % i)
            ok += s.recv(64) == b"ping %d" % i
    den, den_ms = attempt(denied, port)
    line = f"round {r} ok={ok} denied={den} denied_ms={den_ms}"
    if r in nosvc_rounds:
        nos, nos_ms = attempt(vip, port + 1)
        line += f" nosvc={nos} nosvc_ms={nos_ms}"
    print(line, flush=True)
