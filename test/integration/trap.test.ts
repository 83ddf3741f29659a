/** The trap core end to end: real programs under the real seccomp filter, in network namespaces this file
 * creates and removes, talking through a real daemon. */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../src/native/binding.js';
import { CLI, finish, killTree, probe, sleep, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;
let PROBE: string;

beforeAll(async () => {
  PROBE = probe();
  h = TestHost.create('trap');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

function lines(s: string): string[] {
  return s.split('\n').filter(Boolean);
}

describe('bad arguments and escapes', () => {
  it('answers every bad argument with the errno the kernel gives', async () => {
    const r = await h.runToEnd([], [PROBE, 'errno']);
    expect(r.stdout).not.toContain('FAIL');
    expect(r.stdout).toContain('ok errno');
    expect(r.code).toBe(0);
  });

  it('refuses raw/packet sockets, setns, unshare(CLONE_NEWNET), clone3, io_uring, x32 and i386 syscalls', async () => {
    const r = await h.runToEnd([], [PROBE, 'escape']);
    expect(r.stdout).not.toContain('FAIL');
    expect(r.stdout).toContain('ok escape');
    // int 0x80 either reaches the filter (EPERM) or the machine has no IA32 entry at all; both are refusals
    expect(r.stdout).toMatch(/ia32 (refused|unavailable)/);
  });

  it('honours SOCK_NONBLOCK/SOCK_CLOEXEC and setsockopt acts on the real socket', async () => {
    const r = await h.runToEnd([], [PROBE, 'flags']);
    expect(r.stdout).toContain('ok flags');
  });

  it('keeps serving after garbage on the trap socket', async () => {
    /* this process is not a generator: it is refused before anything it sends is parsed (the malformed-message
     * paths of an admitted generator: test/security/register-server.test.ts) */
    const fd = native.seqpacketConnect(`${h.stateDir}/trap.sock`);
    native.send(fd, Buffer.from('garbage'));
    try {
      native.send(fd, Buffer.alloc(112, 0xff));
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EPIPE'); /* the daemon may have dropped us already */
    }
    await waitFor(() => /trap connection refused: .*not the appswitch launcher/.test(h.daemonLog));
    native.close(fd);
    expect((await h.cli(['status', '--json'])).code).toBe(0);
    const r = await h.runToEnd([], [PROBE, 'flags']);
    expect(r.stdout).toContain('ok flags');
  });
});

describe('servers and clients by virtual address', () => {
  it('bind/listen register the service; getsockname shows the virtual address; ports the program asked for', async () => {
    const r = await h.runToEnd(['--ip', '10.1.0.1'], [PROBE, 'bindname', '10.1.0.1', '8080']);
    expect(r.stdout).toContain('ok bindname');
    expect(r.stdout).toContain('bound 10.1.0.1:8080');
    expect(r.stdout).toContain('listening 10.1.0.1:8080');
    const auto = /autobound (\S+):(\d+)/.exec(r.stdout);
    expect(auto?.[1]).toBe('::');
    expect(Number(auto?.[2])).toBeGreaterThan(0);
    const any = await h.runToEnd([], [PROBE, 'bindname', '0.0.0.0', '9090']);
    expect(any.stdout).toContain('bound 0.0.0.0:9090');
  });

  it('python http.server by vip, curl by vip, curl by name-less client; peers see virtual names', async () => {
    const srv = h.run(['--ip', '10.0.0.5', '--name', 'web', '--tag', 'grp=1'], ['python3', '-u', '-m', 'http.server', '8000']);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.5', 8000);
    const svc = (await h.services()).find((s) => s.vip === '10.0.0.5' && s.port === 8000);
    expect(svc?.name).toBe('web');
    expect(svc?.endpoint).toMatch(/^192\.0\.2\.1:\d+$/);
    const c = await h.runToEnd(['--tag', 'grp=1'], ['curl', '-sS', '-m', '10', 'http://10.0.0.5:8000/']);
    expect(c.code).toBe(0);
    expect(c.stdout).toContain('Directory listing');
    const apps = JSON.parse((await h.cli(['get', 'apps', '--json'])).stdout) as Array<{ ip?: string; name?: string; pid?: number }>;
    expect(apps.find((a) => a.ip === '10.0.0.5')?.name).toBe('web');
    expect(apps.find((a) => a.ip === '10.0.0.5')?.pid).toBeGreaterThan(0);
    // the C probe sees vip:port as its peer and the app's identity as its own address
    const p = await h.runToEnd(['--ip', '10.0.0.9', '--tag', 'grp=1'], [PROBE, 'connect', '10.0.0.5', '8000']);
    expect(p.stdout).toContain('peer 10.0.0.5:8000');
    expect(p.stdout).toMatch(/local 10\.0\.0\.9:\d+/);
    const pn = await h.runToEnd(['--tag', 'grp=1'], [PROBE, 'connect', '10.0.0.5', '8000', 'nonblock']);
    expect(pn.stdout).toContain('ok connect');
    expect(pn.stdout).toMatch(/local 169\.254\.\d+\.\d+:\d+/);
    killTree(srv, 'SIGTERM');
    const done = await out;
    expect(done.stderr).toContain('"GET / HTTP/1.1" 200');
    // the program exited: its service is gone
    await waitFor(async () => !(await h.services()).some((s) => s.vip === '10.0.0.5' && s.port === 8000), 5000);
  });

  it('Node.js server and Node.js http.get client (non-blocking connect + epoll) by vip', async () => {
    const server = `require('http').createServer((q, s) => s.end('hello from ' + q.socket.localAddress + ':' + q.socket.localPort)).listen(7000, () => console.log('up'))`;
    const srv = h.run(['--ip', '10.0.0.20'], ['node', '-e', server]);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.20', 7000);
    const client = `require('http').get('http://10.0.0.20:7000/', (r) => { const peer = r.socket.remoteAddress + ':' + r.socket.remotePort; let b=''; r.on('data', d => b += d); r.on('end', () => { console.log(b); console.log('remote ' + peer); }); }).on('error', e => { console.error(e); process.exit(1); })`;
    const c = await h.runToEnd([], ['node', '-e', client]);
    expect(c.stderr).toBe('');
    expect(c.stdout).toMatch(/hello from (::ffff:)?10\.0\.0\.20:7000/); // a dual-stack listener, as natively
    expect(c.stdout).toContain('remote 10.0.0.20:7000');
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('iperf server by vip, iperf client by vip: data flows', async () => {
    const srv = h.run(['--ip', '10.0.0.30', '--name', 'iperf'], ['iperf', '-s', '-p', '5001']);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.30', 5001);
    const c = await h.runToEnd([], ['iperf', '-c', '10.0.0.30', '-p', '5001', '-t', '2', '-f', 'm'], 30_000);
    expect(c.code).toBe(0);
    const m = /([\d.]+) Mbits\/sec/.exec(c.stdout);
    expect(Number(m?.[1])).toBeGreaterThan(100);
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('nc server and nc client by vip', async () => {
    const srv = h.run(['--ip', '10.0.0.40'], ['nc', '-l', '9000']);
    const out = finish(srv, 30_000);
    await h.waitService('10.0.0.40', 9000);
    const c = await h.exec(['sh', '-c', `echo hello-nc | node ${CLI} run -- nc -N 10.0.0.40 9000`], 20_000);
    expect(c.code).toBe(0);
    const s = await out;
    expect(s.stdout).toContain('hello-nc');
  });

  it('a UDP server by vip: bound is serving (no listen); a client reaches it by vip and gets the echo', async () => {
    const echo = 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(("0.0.0.0",5353))\nwhile True:\n  d,a=s.recvfrom(2048); s.sendto(d.upper(),a)';
    const srv = h.run(['--ip', '10.0.0.41'], ['python3', '-c', echo]);
    const out = finish(srv, 30_000);
    await waitFor(async () => (await h.services()).some((x) => x.vip === '10.0.0.41' && x.port === 5353 && x.proto === 'udp'), 30_000);
    const client = 'import socket\nc=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nc.settimeout(5)\nc.sendto(b"ping-udp",("10.0.0.41",5353))\nprint(c.recvfrom(2048)[0].decode())';
    const r = await h.runToEnd([], ['python3', '-c', client]);
    expect(r.stdout.trim(), r.stderr).toBe('PING-UDP');
    killTree(srv, 'SIGKILL');
    await out;
    await waitFor(async () => !(await h.services()).some((x) => x.vip === '10.0.0.41' && x.proto === 'udp'), 30_000);
  });

  it('forked processes and threads all get their connects served', async () => {
    const srv = h.run(['--ip', '10.0.0.50'], ['python3', '-c', 'import socket\ns=socket.socket()\ns.bind(("0.0.0.0",6000))\ns.listen(512)\nwhile True:\n  c,_=s.accept(); c.close()']);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.50', 6000);
    const r = await h.runToEnd([], [PROBE, 'forks', '10.0.0.50', '6000'], 60_000);
    expect(r.stdout).toContain('ok forks');
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('a service disappears when its program closes the listening socket, while the program runs on', async () => {
    const py = 'import socket,time\ns=socket.socket()\ns.bind(("0.0.0.0",6100))\ns.listen()\nprint("listening",flush=True)\ntime.sleep(1.5)\ns.close()\nprint("closed",flush=True)\ntime.sleep(30)';
    const srv = h.run(['--ip', '10.0.0.51'], ['python3', '-c', py]);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.51', 6100);
    const t0 = Date.now();
    await waitFor(async () => !(await h.services()).some((s) => s.vip === '10.0.0.51'), 15_000);
    console.log(`closed listener left the table after ${Date.now() - t0} ms`); /* printed, not asserted (timing) */
    expect(srv.exitCode).toBeNull(); // still running
    killTree(srv, 'SIGKILL');
    await out;
  });
});

describe('robustness and overhead', () => {
  it('programs killed in the middle of trapped calls leave no leaked fds and a working daemon', async () => {
    const srv = h.run(['--ip', '10.0.0.60'], ['python3', '-c', 'import socket\ns=socket.socket()\ns.bind(("0.0.0.0",6200))\ns.listen(512)\nwhile True:\n  c,_=s.accept(); c.close()']);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.60', 6200);
    const daemonFds = (): number => readdirSync(`/proc/${h.daemon?.pid}/fd`).length;
    const before = daemonFds();
    for (let i = 0; i < 5; i++) {
      const p = h.run([], [PROBE, 'forks', '10.0.0.60', '6200']);
      const done = finish(p, 20_000);
      await sleep(150 + 50 * i);
      killTree(p, 'SIGKILL');
      await done;
    }
    let apps = '';
    await waitFor(async () => JSON.parse((apps = (await h.cli(['get', 'apps', '--json'])).stdout)).length === 1, 5000).catch((e: Error) => {
      throw new Error(`${e.message}; apps: ${apps}`);
    });
    // connections the killed clients left in the server's backlog are still being accepted (each fast-path one holds
    // two daemon fds until then; an unidentified one delays the next accept by the identity wait): let them drain
    await waitFor(() => daemonFds() <= before, 15_000).catch(() => expect(daemonFds()).toBeLessThanOrEqual(before));
    const r = await h.runToEnd([], [PROBE, 'forks', '10.0.0.60', '6200'], 60_000);
    expect(r.stdout).toContain('ok forks');
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('two threads blocked in accept() on one blocking listener both get served (the generator never blocks)', async () => {
    const py = 'import socket,threading\ns=socket.socket()\ns.bind(("0.0.0.0",6300))\ns.listen(16)\ndef w():\n  while True:\n    c,_=s.accept(); c.sendall(b"x"); c.close()\nfor i in range(2): threading.Thread(target=w,daemon=True).start()\nthreading.Event().wait()';
    const srv = h.run(['--ip', '10.0.0.61'], ['python3', '-c', py]);
    const out = finish(srv, 60_000);
    await h.waitService('10.0.0.61', 6300);
    const client = 'import socket\nfor i in range(6):\n  c=socket.create_connection(("10.0.0.61",6300),timeout=5); assert c.recv(1)==b"x"; c.close()\nprint("served 6")';
    const r = await h.runToEnd([], ['python3', '-c', client], 40_000);
    expect(r.stdout, r.stderr).toContain('served 6');
    killTree(srv, 'SIGKILL');
    await out;
  });

  it('the trap generator of one program stays under 5 MB RSS', async () => {
    const p = h.run([], ['sleep', '30']);
    const done = finish(p);
    // ip netns exec -> node -> execve(appswitch-launcher): the same pid
    const rssKb = await waitFor(() => {
      const status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
      return status.includes('appswitch-launc') && Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
    });
    expect(rssKb).toBeGreaterThan(0);
    expect(rssKb).toBeLessThan(5 * 1024);
    killTree(p, 'SIGKILL');
    await done;
  });
});

/* The generator accepts on its own duplicate of the program's listener, fetched at each accept (gen_accept.c). A
 * duplicate kept between accepts would save a call, and get these wrong (tried: it left the client below hanging). */
describe('accepts on a replaced or closed listener', () => {
  /** A burst of connections from the program to itself, each accepted: its generator is in the hot wait. */
  const burst = (vip: string, port: number, sock: string): string =>
    `for i in range(300):\n  c=socket.create_connection(("${vip}",${port})); x,_=${sock}.accept(); x.close(); c.close()\n`;

  it('a listener replaced under its fd number (dup2) is not accepted from: the accept takes the new one\'s connection', async () => {
    const py =
      'import socket,os\na=socket.socket()\na.bind(("0.0.0.0",6201))\na.listen(512)\nb=socket.socket()\nb.bind(("0.0.0.0",6202))\nb.listen(512)\n' +
      burst('10.0.0.52', 6201, 'a') +
      'c1=socket.create_connection(("10.0.0.52",6201))\nc2=socket.create_connection(("10.0.0.52",6202))\n' +
      'os.dup2(b.fileno(), a.fileno())\nx,_=a.accept()\nprint("port", x.getsockname()[1], flush=True)\n';
    const r = await h.runToEnd(['--ip', '10.0.0.52'], ['python3', '-c', py], 60_000);
    expect(r.stdout.trim(), r.stderr).toBe('port 6202');
    expect(r.code).toBe(0);
  });

  it('a listener closed right after a burst of accepts stops taking connections (none is left hanging), and its port serves again', async () => {
    /* every socket is made before the burst: nothing after the close waits for the daemon, so the hot wait goes on */
    const py =
      'import socket\na=socket.socket()\na.bind(("0.0.0.0",6301))\na.listen(512)\nq=socket.socket()\nb=socket.socket()\nd=socket.socket()\n' +
      burst('10.0.0.53', 6301, 'a') +
      'a.close()\nq.settimeout(8)\n' +
      'try:\n  q.connect(("10.0.0.53",6301)); got=q.recv(1); print("ended" if got==b"" else "data", flush=True)\n' +
      'except ConnectionRefusedError: print("refused", flush=True)\nexcept ConnectionResetError: print("reset", flush=True)\n' +
      'except socket.timeout: print("hung", flush=True)\n' +
      'b.bind(("0.0.0.0",6301))\nb.listen(512)\n' +
      'd.connect(("10.0.0.53",6301))\nx,_=b.accept()\nd.sendall(b"again")\nprint(x.recv(16).decode(), flush=True)\n';
    const r = await h.runToEnd(['--ip', '10.0.0.53'], ['python3', '-c', py], 60_000);
    const [first, second] = r.stdout.trim().split('\n');
    expect(['refused', 'reset', 'ended'], r.stdout + r.stderr).toContain(first);
    expect(second).toBe('again');
    expect(r.code).toBe(0);
  });

  it('a listener closed while the program keeps making calls (the hot wait goes on) leaves the table', async () => {
    const py =
      'import socket,time\na=socket.socket()\na.bind(("0.0.0.0",6401))\na.listen(512)\ns=socket.socket()\n' +
      burst('10.0.0.54', 6401, 'a') +
      'a.close()\nprint("closed",flush=True)\nend=time.time()+40\nwhile time.time()<end: s.getsockname()\n';
    const srv = h.run(['--ip', '10.0.0.54'], ['python3', '-c', py]);
    let out = '';
    srv.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const done = finish(srv, 90_000);
    try {
      await waitFor(() => out.includes('closed'), 60_000);
      /* its real socket stops listening (no duplicate of ours keeps it), so the sweep withdraws the service */
      await waitFor(async () => !(await h.services()).some((x) => x.vip === '10.0.0.54'), 15_000);
      expect(srv.exitCode).toBeNull(); /* still making calls */
    } finally {
      killTree(srv, 'SIGKILL');
      await done;
    }
  });
});

describe('virtual addresses are names, never destinations', () => {
  it('connect to an unregistered vip fails with ECONNREFUSED and sends no packet', async () => {
    const cap = h.spawn(['tcpdump', '-i', 'v0', '-n', '-l', '-U', 'net', '10.0.0.0/8']);
    let captured = '';
    cap.stdout?.on('data', (d: Buffer) => (captured += d.toString()));
    let capErr = '';
    cap.stderr?.on('data', (d: Buffer) => (capErr += d.toString()));
    await waitFor(() => capErr.includes('listening on'), 30_000);
    // the capture sees a packet that really leaves (native, outside appswitch): the check can fail
    await h.exec(['sh', '-c', 'echo x | nc -u -w1 10.77.0.1 9 || true'], 10_000);
    await waitFor(() => captured.includes('10.77.0.1'), 5000);
    captured = '';
    const r = await h.runToEnd([], [PROBE, 'refused', '10.88.0.1', '80']);
    expect(r.stdout).toContain('ok refused');
    const c = await h.runToEnd([], ['curl', '-sS', '-m', '5', 'http://10.88.0.1:80/']);
    expect(c.code).toBe(7); // curl: couldn't connect
    await sleep(500);
    killTree(cap, 'SIGTERM');
    expect(captured).not.toContain('10.88.0.1');
  });

  it('addresses outside the virtual ranges are reached directly (TCP and UDP egress)', async () => {
    const echo = h.spawn(['python3', '-c', 'import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nu.bind(("192.0.2.1",9999))\nprint("up",flush=True)\nwhile True:\n  d,a=u.recvfrom(100); u.sendto(d,a)']);
    const tcp = h.spawn(['python3', '-c', 'import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(("192.0.2.1",9998))\ns.listen()\nprint("up",flush=True)\nwhile True:\n  c,_=s.accept(); c.recv(10); c.sendall(b"native-ok"); c.close()']);
    let up = '';
    echo.stdout?.on('data', (d: Buffer) => (up += d.toString()));
    tcp.stdout?.on('data', (d: Buffer) => (up += d.toString()));
    await waitFor(() => up.split('up').length - 1 >= 2, 30_000);
    const u = await h.runToEnd([], [PROBE, 'udpecho', '192.0.2.1', '9999']);
    expect(u.stdout).toContain('ok udpecho');
    const t = await h.runToEnd([], [PROBE, 'connect', '192.0.2.1', '9998']);
    expect(t.stdout).toContain('peer 192.0.2.1:9998');
    expect(t.stdout).toContain('read 9');
    killTree(echo, 'SIGKILL');
    killTree(tcp, 'SIGKILL');
  });
});

describe('appswitch run behaves like the program it runs', () => {
  it('passes the exit code through, and 128+N for a signal', async () => {
    expect((await h.runToEnd([], ['sh', '-c', 'exit 7'])).code).toBe(7);
    expect((await h.runToEnd([], ['sh', '-c', 'kill -TERM $$'])).code).toBe(143);
    expect((await h.runToEnd([], ['/nonexistent/program'])).code).toBe(127);
  });

  it('passes stdin and stdout through', async () => {
    const p = h.run([], ['cat'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = finish(p);
    p.stdin?.end('through the pipe\n');
    const r = await out;
    expect(r.stdout).toBe('through the pipe\n');
    expect(r.code).toBe(0);
  });

  it('delivers SIGINT, SIGTERM and SIGHUP to the program', async () => {
    for (const [sig, num] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
      const py = `import signal,sys,time\ndef h(s,f):\n  print("got",s,flush=True); sys.exit(40+s)\nsignal.signal(${num},h)\nprint("ready",flush=True)\ntime.sleep(30)`;
      const p = h.run([], ['python3', '-c', py]);
      let out = '';
      p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      const done = finish(p);
      await waitFor(() => out.includes('ready'), 30_000);
      // signal the `appswitch run` process itself (ip netns exec -> node -> execve'd launcher: one pid)
      process.kill(p.pid as number, sig);
      const r = await done;
      expect(out).toContain(`got ${num}`);
      expect(r.code).toBe(40 + num);
    }
  });

  /* the hot wait (native/gen_hot.c): while calls keep coming the generator waits in SECCOMP_IOCTL_NOTIF_RECV, where it
   * sees nothing else; a 2 ms timer brings it back to its other descriptors, and it stops when the calls do */
  it('a program that makes trapped calls without pause still gets its signals, and an idle one costs its generator nothing', async () => {
    const busy = `import signal,socket,sys\ndef h(s,f):\n  print("got",s,flush=True); sys.exit(55)\nsignal.signal(15,h)\ns=socket.socket()\nprint("ready",flush=True)\nwhile True: s.getsockname()`;
    const p = h.run([], ['python3', '-c', busy]);
    let out = '';
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const done = finish(p);
    await waitFor(() => out.includes('ready'), 30_000);
    await sleep(300); /* hot by now */
    process.kill(p.pid as number, 'SIGTERM');
    const r = await done;
    expect(out).toContain('got 15');
    expect(r.code).toBe(55);

    const idle = `import socket,time\ns=socket.socket()\nfor i in range(2000): s.getsockname()\nprint("ready",flush=True)\ntime.sleep(30)`;
    const q = h.run([], ['python3', '-c', idle]);
    let out2 = '';
    q.stdout?.on('data', (d: Buffer) => (out2 += d.toString()));
    const done2 = finish(q);
    try {
      await waitFor(() => out2.includes('ready'), 30_000);
      await sleep(200);
      const switches = (): number => {
        const st = readFileSync(`/proc/${q.pid as number}/status`, 'utf8');
        return [...st.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
      };
      const before = switches();
      await sleep(1000);
      /* asleep in epoll_wait: its 1 s timer at most, not a tick every 2 ms */
      expect(switches() - before).toBeLessThanOrEqual(5);
    } finally {
      killTree(q, 'SIGKILL');
      await done2;
    }
  });
});
