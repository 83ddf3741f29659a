"""A TCP server that tells each client what its accepted socket saw: one line
`TAG local=IP:PORT peer=IP:PORT`, then close (argv: port [tag [bind-ip]]). Prints `listening FD PID` once ready, FD being
the listening socket's descriptor number (tests take a duplicate of it with pidfd_getfd)."""
import os
import socket
import sys

port = int(sys.argv[1])
tag = sys.argv[2] if len(sys.argv) > 2 else "server"
host = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(128)
print("listening", srv.fileno(), os.getpid(), flush=True)
while True:
    c, _ = srv.accept()
    with c:
        l, p = c.getsockname(), c.getpeername()
        c.sendall(f"{tag} local={l[0]}:{l[1]} peer={p[0]}:{p[1]}\n".encode())
        # read what the client sent (an HTTP request from curl) until it closes: closing with unread data would reset
        c.shutdown(socket.SHUT_WR)
        c.settimeout(2)
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
