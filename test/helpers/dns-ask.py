#!/usr/bin/env python3
"""A DNS client for tests that shows the raw outcome a resolver library would hide: asks for the A record of each
NAME (all at once, one thread and one socket each) from the first nameserver of /etc/resolv.conf (or --server) on
port 53, over UDP (or --tcp), and prints one JSON line per name, in the order given:
  {"name", "rcode" (number, or "timeout"/"error: ..."), "tc", "answers" [ips], "peer" [ip, port] as getpeername says}
usage: dns-ask.py [--tcp] [--server IP] [--timeout S] NAME..."""
import json
import random
import socket
import struct
import sys
import threading


def nameserver():
    with open('/etc/resolv.conf') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == 'nameserver':
                return parts[1]
    raise SystemExit('no nameserver in /etc/resolv.conf')


def query(name, qid):
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip('.').split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\x00' + struct.pack('>HH', 1, 1)


def parse(msg, qid):
    rid, flags, qd, an = struct.unpack('>HHHH', msg[:8])
    if rid != qid:
        return None
    i = 12
    for _ in range(qd):
        while msg[i] != 0:
            if msg[i] >= 0xc0:
                i += 1
                break
            i += 1 + msg[i]
        i += 5
    ips = []
    for _ in range(an):
        if msg[i] >= 0xc0:
            i += 2
        else:
            while msg[i] != 0:
                i += 1 + msg[i]
            i += 1
        rtype, _cls, _ttl, rdlen = struct.unpack('>HHIH', msg[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            ips.append(socket.inet_ntoa(msg[i:i + 4]))
        i += rdlen
    return {'rcode': flags & 0xf, 'tc': bool(flags & 0x0200), 'answers': ips}


def ask(name, server, tcp, timeout, out, k):
    qid = random.randint(0, 0xffff)
    res = {'name': name}
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((server, 53))
        res['peer'] = list(s.getpeername())
        msg = query(name, qid)
        if tcp:
            s.sendall(struct.pack('>H', len(msg)) + msg)
            buf = b''
            while len(buf) < 2 or len(buf) < 2 + struct.unpack('>H', buf[:2])[0]:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError('closed')
                buf += chunk
            res.update(parse(buf[2:], qid))
        else:
            s.send(msg)
            while True:
                p = parse(s.recv(4096), qid)
                if p is not None:
                    res.update(p)
                    break
        s.close()
    except socket.timeout:
        res['rcode'] = 'timeout'
    except Exception as e:  # noqa: BLE001 - the test prints whatever happened
        res['rcode'] = 'error: %s' % e
    out[k] = res


def main():
    args = sys.argv[1:]
    tcp, server, timeout = False, None, 15.0
    while args and args[0].startswith('--'):
        flag = args.pop(0)
        if flag == '--tcp':
            tcp = True
        elif flag == '--server':
            server = args.pop(0)
        elif flag == '--timeout':
            timeout = float(args.pop(0))
    server = server or nameserver()
    out = [None] * len(args)
    threads = [threading.Thread(target=ask, args=(n, server, tcp, timeout, out, k)) for k, n in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        print(json.dumps(r))


if __name__ == '__main__':
    main()
