"""The options the generator keeps for the program (native/sockopt_emul.h: TCP_DEFER_ACCEPT, IPV6_V6ONLY after a
bind), and their error cases, called through libc so that lengths and pointers can be wrong. Prints one line per
case: the call's result or errno, and the value read back. The same output natively and under appswitch is the
test (integration/apache.test.ts)."""
import ctypes
import errno
import socket

libc = ctypes.CDLL(None, use_errno=True)
TCP_DEFER_ACCEPT, IPV6_V6ONLY = socket.TCP_DEFER_ACCEPT, socket.IPV6_V6ONLY
TCP, V6 = socket.IPPROTO_TCP, socket.IPPROTO_IPV6
BAD = ctypes.c_void_p(8)  # an unmapped address


def res(r):
    return 'ok' if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def setopt(fd, level, name, val, length=4, ptr=None):
    v = ctypes.c_int(val)
    return res(libc.setsockopt(fd, level, name, ptr if ptr is not None else ctypes.byref(v), ctypes.c_uint(length)))


def getopt(fd, level, name, length=4, bad_val=False, bad_len=False):
    v = ctypes.c_int(-7)
    n = ctypes.c_int(length)
    r = libc.getsockopt(fd, level, name, BAD if bad_val else ctypes.byref(v), BAD if bad_len else ctypes.byref(n))
    return '%s val=%d len=%d' % (res(r), v.value, n.value) if r == 0 else res(r)


t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
fd = t.fileno()
print('get fresh', getopt(fd, TCP, TCP_DEFER_ACCEPT))
for secs in (30, 1, 3, 200, 100000, 0, -5):
    print('set %d' % secs, setopt(fd, TCP, TCP_DEFER_ACCEPT, secs), 'get', getopt(fd, TCP, TCP_DEFER_ACCEPT))
print('set 30', setopt(fd, TCP, TCP_DEFER_ACCEPT, 30))
print('set short len', setopt(fd, TCP, TCP_DEFER_ACCEPT, 5, length=2))
print('set long len', setopt(fd, TCP, TCP_DEFER_ACCEPT, 7, length=8), 'get', getopt(fd, TCP, TCP_DEFER_ACCEPT))
print('set len 2**31', setopt(fd, TCP, TCP_DEFER_ACCEPT, 9, length=2**31), 'get', getopt(fd, TCP, TCP_DEFER_ACCEPT))
print('set bad pointer', setopt(fd, TCP, TCP_DEFER_ACCEPT, 0, ptr=BAD))
print('get len 2', getopt(fd, TCP, TCP_DEFER_ACCEPT, length=2))
print('get len 0', getopt(fd, TCP, TCP_DEFER_ACCEPT, length=0))
print('get len -1', getopt(fd, TCP, TCP_DEFER_ACCEPT, length=-1))
print('get bad value pointer', getopt(fd, TCP, TCP_DEFER_ACCEPT, bad_val=True))
print('get bad length pointer', getopt(fd, TCP, TCP_DEFER_ACCEPT, bad_len=True))
t.bind(('0.0.0.0', 0))
t.listen(4)
print('after listen get', getopt(fd, TCP, TCP_DEFER_ACCEPT))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print('udp set', setopt(u.fileno(), TCP, TCP_DEFER_ACCEPT, 30), 'get', getopt(u.fileno(), TCP, TCP_DEFER_ACCEPT))
print('closed fd', setopt(1000, TCP, TCP_DEFER_ACCEPT, 30), getopt(1000, TCP, TCP_DEFER_ACCEPT))
r, w = socket.socketpair()
print('unix socket', setopt(r.fileno(), TCP, TCP_DEFER_ACCEPT, 30))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
print('v6 set v6only', setopt(s6.fileno(), V6, IPV6_V6ONLY, 1), 'get', getopt(s6.fileno(), V6, IPV6_V6ONLY))
try:
    s6.bind(('::ffff:127.0.0.1', 0))
    print('v6only bind v4-mapped ok')
except OSError as e:
    print('v6only bind v4-mapped', errno.errorcode[e.errno])
s6.bind(('::', 0))
print('v6only bound get', getopt(s6.fileno(), V6, IPV6_V6ONLY), 'len 1', getopt(s6.fileno(), V6, IPV6_V6ONLY, length=1))
print('v6only bound get len -1', getopt(s6.fileno(), V6, IPV6_V6ONLY, length=-1), 'len 0', getopt(s6.fileno(), V6, IPV6_V6ONLY, length=0))
print('v6only bound set 0', setopt(s6.fileno(), V6, IPV6_V6ONLY, 0), 'get', getopt(s6.fileno(), V6, IPV6_V6ONLY))
print('v6only bound get bad pointer', getopt(s6.fileno(), V6, IPV6_V6ONLY, bad_val=True))
d6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
d6.bind(('::', 0))
print('dual bound get', getopt(d6.fileno(), V6, IPV6_V6ONLY))
