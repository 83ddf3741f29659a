"""Dual-stack probe (issue 11, item 1), the shape of redis' `bind * -::*` and nginx' `listen 80; listen [::]:80;`.

server PORT MODE N   MODE both: an AF_INET socket on 0.0.0.0:PORT, then an AF_INET6 socket with IPV6_V6ONLY on
                     [::]:PORT; MODE v6only: only the second. Prints each socket's name and IPV6_V6ONLY as read back,
                     then serves N connections: each client is told which socket took it ("fam=4" / "fam=6") and the
                     peer address that accept() gave, and the server prints the same line.
client HOST PORT     connects (AF_INET6 when HOST has a colon), prints the server's line.
"""
import select
import socket
import sys


def server(port, mode, n):
    socks = []
    if mode == 'both':
        a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(('0.0.0.0', port))
        a.listen(16)
        print('v4 name=%s:%d' % a.getsockname(), flush=True)
        socks.append((a, 4))
    b = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    b.bind(('::', port))
    b.listen(16)
    name = b.getsockname()
    print('v6 ok name=[%s]:%d v6only=%d' % (name[0], name[1], b.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)), flush=True)
    socks.append((b, 6))
    by_fd = {s.fileno(): (s, fam) for s, fam in socks}
    served = 0
    while served < n:
        ready, _, _ = select.select(list(by_fd), [], [], 60)
        for fd in ready:
            s, fam = by_fd[fd]
            c, peer = s.accept()
            line = 'fam=%d peer=%s' % (fam, peer[0])
            print('accepted ' + line, flush=True)
            c.sendall((line + '\n').encode())
            c.close()
            served += 1


def client(host, port):
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect((host, port))
    data = b''
    while not data.endswith(b'\n'):
        chunk = c.recv(100)
        if not chunk:
            break
        data += chunk
    print('got ' + data.decode().strip(), flush=True)


if __name__ == '__main__':
    if sys.argv[1] == 'server':
        server(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
