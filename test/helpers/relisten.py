"""A listener closed and its port bound again (issue 11 item 2, iperf3 -s's pattern). server PORT ROUNDS MODE:
ROUNDS times: bind 0.0.0.0:PORT, listen, close the listener, at once the next. MODE serve: with SO_REUSEADDR (as
iperf3), each round serves one connection ("round N") before closing; MODE quiet: without SO_REUSEADDR, rounds serve
nobody (the kernel would refuse the bind while a served connection's TIME_WAIT holds the port) except the last.
Prints "bound N" before each accept, so a client knows when to come, and "done" at the end."""
import socket
import sys

port, rounds, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for i in range(rounds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mode == 'serve':
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('0.0.0.0', port))
    except OSError as e:
        print('bind %d failed: %s' % (i, e), flush=True)
        sys.exit(1)
    s.listen(4)
    if mode == 'serve' or i == rounds - 1:
        print('bound %d' % i, flush=True)
        c, _ = s.accept()
        c.sendall(b'round %d\n' % i)
        c.close()
    s.close()
print('done', flush=True)
