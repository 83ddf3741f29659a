"""Connects to IP:PORT (argv; COUNT times, default 1) and prints one JSON line per connection: {"reply": the server's
line, "local": "IP:PORT"} or {"error": "ECONNREFUSED" ...}."""
import errno
import json
import socket
import sys


def once():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        l = s.getsockname()
        data = b""
        while not data.endswith(b"\n"):
            d = s.recv(256)
            if not d:
                break
            data += d
        print(json.dumps({"reply": data.decode().strip(), "local": f"{l[0]}:{l[1]}"}))
    except OSError as e:
        print(json.dumps({"error": errno.errorcode.get(e.errno, str(e))}))


for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
    once()
