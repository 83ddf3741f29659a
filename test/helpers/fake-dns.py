#!/usr/bin/env python3
"""A misbehaving upstream DNS server for tests (UDP and TCP on one address and port). What it does depends on the
first label of the name asked:
  ok        A 203.0.113.5              nx        NXDOMAIN
  garbage   bytes that are no DNS answer, never a real one
  wrongid   an answer with the wrong id, then the right one (A 203.0.113.6)
  onlywrong only answers with the wrong id
  hole      nothing at all (a black hole)
  cut       UDP: truncated (TC); TCP: the length and half the answer, then the connection is closed
  tcpok     UDP: truncated (TC); TCP: the whole answer (A 203.0.113.7)
  anything else: REFUSED.
usage: fake-dns.py ADDRESS PORT [--stats-port N]   prints "ready" once listening and one line "q TRANSPORT NAME" per
query it reads (stdout, flushed)."""
import socket
import struct
import sys
import threading


def parse_question(msg):
    """(id, flags, question bytes, first label) of a query, or None."""
    if len(msg) < 12:
        return None
    qid, flags, qd = struct.unpack('>HHH', msg[:6])
    if qd != 1:
        return None
    i, labels = 12, []
    while i < len(msg) and msg[i] != 0:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode('ascii', 'replace').lower())
        i += 1 + n
    end = i + 5
    if end > len(msg):
        return None
    return qid, flags, msg[12:end], (labels[0] if labels else '')


def response(qid, question, rcode=0, tc=False, a=None):
    flags = 0x8000 | 0x0100 | 0x0080 | rcode | (0x0200 if tc else 0)
    out = struct.pack('>HHHHHH', qid, flags, 1, 1 if a else 0, 0, 0) + question
    if a:
        out += b'\xc0\x0c' + struct.pack('>HHIH', 1, 1, 30, 4) + socket.inet_aton(a)
    return out


def udp_answers(msg):
    q = parse_question(msg)
    if q is None:
        return []
    qid, _flags, question, label = q
    if label == 'ok':
        return [response(qid, question, a='203.0.113.5')]
    if label == 'nx':
        return [response(qid, question, rcode=3)]
    if label == 'garbage':
        return [b'\x00\x01garbage', b'', response(qid, question, a='203.0.113.66')[:14]]
    if label == 'wrongid':
        return [response(qid ^ 0x5a5a, question, a='203.0.113.66'), response(qid, question, a='203.0.113.6')]
    if label == 'onlywrong':
        return [response(qid ^ 0x5a5a, question, a='203.0.113.66')]
    if label == 'hole':
        return []
    if label in ('cut', 'tcpok'):
        return [response(qid, question, tc=True)]
    return [response(qid, question, rcode=5)]


def log(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def serve_udp(sock):
    while True:
        msg, peer = sock.recvfrom(4096)
        q = parse_question(msg)
        log('q udp %s' % (q[3] if q else '?'))
        for out in udp_answers(msg):
            sock.sendto(out, peer)


def serve_tcp_conn(conn):
    try:
        head = conn.recv(2)
        if len(head) < 2:
            return
        n = struct.unpack('>H', head)[0]
        msg = b''
        while len(msg) < n:
            chunk = conn.recv(n - len(msg))
            if not chunk:
                return
            msg += chunk
        q = parse_question(msg)
        log('q tcp %s' % (q[3] if q else '?'))
        if q is None:
            return
        qid, _flags, question, label = q
        if label == 'cut':
            out = response(qid, question, a='203.0.113.8')
            conn.sendall(struct.pack('>H', len(out)) + out[:len(out) // 2])
            return
        out = response(qid, question, a='203.0.113.7') if label == 'tcpok' else udp_answers(msg)[:1]
        if isinstance(out, list):
            if not out:
                return
            out = out[0]
        conn.sendall(struct.pack('>H', len(out)) + out)
    finally:
        conn.close()


def serve_tcp(sock):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn,), daemon=True).start()


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(16)
    threading.Thread(target=serve_tcp, args=(t,), daemon=True).start()
    log('ready')
    serve_udp(u)


if __name__ == '__main__':
    main()
