"""TCP_DEFER_ACCEPT probe (issue 11, item 3: apache's `AcceptFilter http data`, the Linux default, sets it on its
listener). server PORT N: sets TCP_DEFER_ACCEPT to 30 s on its listener, prints the value read back (the kernel
answers 31: whole SYN-ACK retransmissions), then, waiting in select() as apache does, serves N connections: reads a
request line and answers "pong <line>". client HOST PORT: sends one line, prints the answer."""
import select
import socket
import sys

if sys.argv[1] == 'server':
    port, n = int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('::', port))
    s.listen(16)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    print('defer=%d' % s.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT), flush=True)
    for _ in range(n):
        select.select([s], [], [], 120)
        c, _ = s.accept()
        print('defer on accepted=%d' % c.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT), flush=True)
        line = c.recv(100)
        c.sendall(b'pong ' + line)
        c.close()
    print('served', flush=True)
else:
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=15)
    c.sendall(b'ping\n')
    print(c.recv(100).decode().strip(), flush=True)
