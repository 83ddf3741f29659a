"""Opens a TCP connection from local port LPORT to an instance's real endpoint TARGET (ip:port) and writes PREAMBLE
(hex) first, as a gateway's relay does (with TCP_DEFER_ACCEPT, so the handshake's last ACK carries it), then an HTTP
GET; prints what came back ("closed" when the connection ended without an answer). With DELAY (seconds), it waits that
long between connect and the preamble: the handshake completes without it and the instance accepts first. For the
attack tests of test/integration/ingress-preamble.test.ts; run inside a test host's namespace."""
import socket
import sys
import time

target, lport, pre = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
ip, port = target.rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
s.bind(("", lport))
s.settimeout(8)
got = b""
try:
    s.connect((ip, int(port)))
    if delay:
        time.sleep(delay)
    s.sendall(pre + b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
except OSError:
    pass
print(got.decode(errors="replace") if got else "closed")
