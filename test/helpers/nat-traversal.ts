/**
 * NAT-traversal probes (issue 8; RFC 4787 §5, RFC 5382 REQ-2/REQ-5) in the routed topology of
 * topology.ts, shared by test/integration/nat-traversal.test.ts and bench/faithful-nat.ts so
 * the test and the anchors' table measure the same thing. Each probe runs real kernel sockets
 * (python3) in the guest namespace and in the target namespace, and reports what it saw; the
 * caller decides what that should be. Nothing here asserts a timing: waits are bounds after
 * which a probe reports "nothing", and ordering is made with iptables counters, not sleeps.
 *
 * The host namespace (where the NAT under test runs) is 10.77.0.1 as the target sees it.
 */
import type { ChildProcess } from 'node:child_process';
import type { Sandbox } from './netns';
import { TARGET_ADDR, type Topology } from './topology';

export const HOST_ADDR = '10.77.0.1';
/** A second address of the target namespace ("host B" of the filtering probe). */
export const TARGET_ADDR_B = '10.77.3.3';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function py(lines: string[]): string[] {
  return ['python3', '-c', lines.join('\n')];
}

/** Resolves with the child's stdout once it exits (or after `timeoutMs`, killing it). */
function outputOf(child: ChildProcess, timeoutMs: number): Promise<string> {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill();
      resolve(out);
    }, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

/** Wait until `out()` matches `re` (or `timeoutMs` passes); true when it matched. */
async function waitForOutput(out: () => string, re: RegExp, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (re.test(out())) return true;
    await sleep(100);
  }
  return re.test(out());
}

/**
 * RFC 4787 §5 filtering. The guest sends one datagram from port 40000 to A = target:7777; the
 * target then sends to the mapped address and port from A:7778 (same address, other port), from
 * B = 10.77.3.3:7777 (other address) and last from A:7777 itself. Returns the tags that reached
 * the guest, sorted: 'A' (the destination), 'A2' (its address, another port), 'B' (another
 * host). Endpoint-independent: A A2 B; address-dependent: A A2; address-and-port-dependent: A.
 */
export async function udpFilteringSeen(sb: Sandbox, guestNs: string, topo: Topology): Promise<string[]> {
  await sb.exec(topo.target, ['ip', 'addr', 'add', `${TARGET_ADDR_B}/24`, 'dev', 't0']);
  const server = sb.spawn(topo.target, py([
    'import socket',
    'def udp(addr, port):',
    '  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, port)); return u',
    `a, a2, b = udp("${TARGET_ADDR}", 7777), udp("${TARGET_ADDR}", 7778), udp("${TARGET_ADDR_B}", 7777)`,
    'print("ready", flush=True)',
    'd, peer = a.recvfrom(100)',
    'for s, tag in ((a2, b"A2"), (b, b"B"), (a, b"A")): s.sendto(tag, peer)',
  ]));
  let serverOut = '';
  server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
  await waitForOutput(() => serverOut, /ready/, 10_000);
  const r = await sb.exec(guestNs, py([
    'import socket',
    'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 40000)); u.settimeout(5)',
    `u.sendto(b"hello", ("${TARGET_ADDR}", 7777))`,
    'got = []',
    'while True:',
    '  try: got.append(u.recv(100).decode())',
    '  except socket.timeout: break',
    '  if "A" in got: u.settimeout(2)',
    'print("got", " ".join(sorted(got)))',
  ]));
  server.kill();
  const m = /^got ?(.*)$/m.exec(r.stdout);
  return m ? m[1].split(' ').filter(Boolean) : [];
}

/** The tags each filtering mode lets through (see udpFilteringSeen). */
export const FILTERING_EXPECTED: Record<string, string[]> = {
  'endpoint-independent': ['A', 'A2', 'B'],
  'address-dependent': ['A', 'A2'],
  'address-and-port-dependent': ['A'],
};

export interface SimultaneousOpenResult {
  /** What each side printed: "got <data>" or an error name. */
  guest: string;
  peer: string;
}

/**
 * TCP simultaneous open through a port forward (RFC 5382 REQ-2, hole punching): a forward
 * host:`hostPort` → guest:`guestPort` is in place; the guest connects *from* guestPort to the
 * target's port 9100 while the target connects from 9100 to host:`hostPort`. r2 drops SYNs (not
 * SYN-ACKs) until it has dropped one each way, so both ends are in SYN_SENT when the other's
 * retransmitted SYN comes through: the SYNs cross. Then each side sends a line and reads the
 * other's.
 */
export async function simultaneousOpen(sb: Sandbox, guestNs: string, topo: Topology, hostPort: number, guestPort: number): Promise<SimultaneousOpenResult> {
  const r2 = topo.routers[1];
  // one rule per direction, so its counter says that side's SYN was sent
  const rules = [TARGET_ADDR, HOST_ADDR].map((dst) => ['FORWARD', '-d', dst, '-p', 'tcp', '--tcp-flags', 'SYN,ACK', 'SYN', '-j', 'DROP']);
  for (const rule of rules) await sb.must(['iptables', '-I', ...rule], r2);
  const side = (ns: string, bind: [string, number], to: [string, number], says: string): ChildProcess =>
    sb.spawn(ns, py([
      'import socket, errno',
      's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `s.bind(("${bind[0]}", ${bind[1]})); s.settimeout(30)`,
      'try:',
      `  s.connect(("${to[0]}", ${to[1]})); s.sendall(b"${says}\\n")`,
      '  d = b""',
      '  while not d.endswith(b"\\n"):',
      '    c = s.recv(100)',
      '    if not c: break',
      '    d += c',
      '  print("got", d.decode().strip(), flush=True)',
      'except OSError as e: print(errno.errorcode.get(e.errno, repr(e)) if e.errno else repr(e), flush=True)',
    ]));
  const guest = side(guestNs, ['0.0.0.0', guestPort], [TARGET_ADDR, 9100], 'from-guest');
  const peer = side(topo.target, [TARGET_ADDR, 9100], [HOST_ADDR, hostPort], 'from-peer');
  const guestOut = outputOf(guest, 60_000);
  const peerOut = outputOf(peer, 60_000);
  // Both first SYNs dropped: let the retransmissions through.
  const bothDropped = async (): Promise<boolean> => {
    const list = await sb.exec(r2, ['iptables', '-L', 'FORWARD', '-v', '-n', '-x']);
    const counts = [...list.stdout.matchAll(/^\s*(\d+)\s+\d+\s+DROP/gm)].map((m) => Number(m[1]));
    return counts.length === 2 && counts.every((n) => n > 0);
  };
  const until = Date.now() + 20_000;
  while (Date.now() < until && !(await bothDropped())) await sleep(50);
  for (const rule of rules) await sb.must(['iptables', '-D', ...rule], r2);
  const [g, p] = await Promise.all([guestOut, peerOut]);
  return { guest: g.trim(), peer: p.trim() };
}

/**
 * Who a port-forwarded connection comes from, as the guest sees it: a server on guest port
 * `guestPort` answers each connection with "<peer address> <what it got>". A client in
 * `clientNs` (null = the NAT's host namespace) connects to `addr:hostPort` and sends "ping".
 * Returns the server's line (or the client's error).
 */
export async function forwardPeerSeen(sb: Sandbox, guestNs: string, guestPort: number, clientNs: string | null, addr: string, hostPort: number): Promise<string> {
  const key = `fwd-server-${guestPort}`;
  if (!servers.has(`${guestNs}/${key}`)) {
    const server = sb.spawn(guestNs, py([
      'import socket',
      'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `l.bind(("0.0.0.0", ${guestPort})); l.listen(8)`,
      'print("ready", flush=True)',
      'while True:',
      '  c, a = l.accept(); d = c.recv(100); c.sendall(("%s %s\\n" % (a[0], d.decode())).encode()); c.close()',
    ]));
    let out = '';
    server.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitForOutput(() => out, /ready/, 10_000);
    servers.add(`${guestNs}/${key}`);
  }
  const r = await sb.exec(clientNs, py([
    'import socket',
    'try:',
    `  s = socket.create_connection(("${addr}", ${hostPort}), timeout=15); s.sendall(b"ping")`,
    '  print(s.recv(200).decode().strip())',
    'except OSError as e: print("error", repr(e))',
  ]));
  return r.stdout.trim();
}

const servers = new Set<string>();

export interface KeepAliveResult {
  /** The idle connection was still up after several probe intervals with the path up. */
  survivedIdle: boolean;
  /** What the guest's blocked recv() ended with after the target went silent ('' = nothing). */
  afterSilence: string;
  /** Everything the guest printed (for the record). */
  output: string;
}

/**
 * Keep-alives: the guest connects to the target (port 7790) with SO_KEEPALIVE, TCP_KEEPIDLE 2,
 * TCP_KEEPINTVL 1, TCP_KEEPCNT 3, and stays idle for 8 s (several probes) — the connection must
 * survive. Then the target silently drops every TCP segment (iptables in its namespace) and the
 * guest blocks in recv(): a NAT that honours the guest's keep-alive ends it with an error; one
 * that only answers the probes itself leaves the guest hanging (reported as '' after
 * `silenceBoundMs`).
 */
export async function keepAliveProbe(sb: Sandbox, guestNs: string, topo: Topology, silenceBoundMs = 60_000): Promise<KeepAliveResult> {
  const server = sb.spawn(topo.target, py([
    'import socket, time',
    'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
    'l.bind(("0.0.0.0", 7790)); l.listen(1)',
    'print("ready", flush=True)',
    'c, a = l.accept()',
    'time.sleep(3600)',
  ]));
  let serverOut = '';
  server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
  await waitForOutput(() => serverOut, /ready/, 10_000);
  const guest = sb.spawn(guestNs, py([
    'import socket, select, errno, time',
    's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)',
    's.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)',
    's.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)',
    's.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)',
    `s.connect(("${TARGET_ADDR}", 7790))`,
    'r, _, _ = select.select([s], [], [], 8)',
    'print("alive" if not r else "ended-early", flush=True)',
    'try:',
    '  d = s.recv(100); print("eof" if not d else "data", flush=True)',
    'except OSError as e: print("error", errno.errorcode.get(e.errno, repr(e)), flush=True)',
  ]));
  let out = '';
  guest.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  guest.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  await waitForOutput(() => out, /alive|ended-early|Error/, 30_000);
  const survivedIdle = /^alive$/m.test(out);
  await sb.must(['iptables', '-A', 'INPUT', '-p', 'tcp', '--dport', '7790', '-j', 'DROP'], topo.target);
  await waitForOutput(() => out, /^(error|eof|data)/m, silenceBoundMs);
  guest.kill();
  server.kill();
  const m = /^(error \S+|eof|data)$/m.exec(out);
  return { survivedIdle, afterSilence: m ? m[1] : '', output: out.trim() };
}

/**
 * Source ports (issue 8, "a privileged source port survives"): a server in `ns` on `port`
 * answering each TCP connection and each UDP datagram with the source port it came from.
 * Killed by the sandbox at the end; resolves once it listens.
 */
export async function sourcePortEcho(sb: Sandbox, ns: string, port: number): Promise<ChildProcess> {
  const server = sb.spawn(ns, py([
    'import socket, threading',
    `u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ${port}))`,
    'def udp():',
    '  while True:',
    '    d, a = u.recvfrom(100); u.sendto(str(a[1]).encode(), a)',
    'threading.Thread(target=udp, daemon=True).start()',
    `l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", ${port})); l.listen(5)`,
    'print("ready", flush=True)',
    'while True:',
    '  c, a = l.accept(); c.sendall(str(a[1]).encode()); c.close()',
  ]));
  let out = '';
  server.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitForOutput(() => out, /ready/, 10_000);
  return server;
}

/**
 * From the guest namespace: a TCP connection from `tcpSrc` and a UDP datagram from `udpSrc` to
 * the target's sourcePortEcho on `port`; the source ports the target saw (or the error).
 */
export async function sourcePortsSeen(sb: Sandbox, guestNs: string, port: number, tcpSrc: number, udpSrc: number): Promise<{ tcp: string; udp: string; output: string }> {
  const r = await sb.exec(guestNs, py([
    'import socket',
    'try:',
    `  s = socket.socket(); s.bind(("0.0.0.0", ${tcpSrc})); s.settimeout(10)`,
    `  s.connect(("${TARGET_ADDR}", ${port})); print("tcp", s.recv(100).decode())`,
    'except Exception as e: print("tcp", repr(e))',
    'try:',
    `  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ${udpSrc})); u.settimeout(5)`,
    `  u.sendto(b"q", ("${TARGET_ADDR}", ${port})); print("udp", u.recvfrom(100)[0].decode())`,
    'except Exception as e: print("udp", repr(e))',
  ]));
  const output = r.stdout + r.stderr;
  return { tcp: /^tcp (.*)$/m.exec(r.stdout)?.[1] ?? '', udp: /^udp (.*)$/m.exec(r.stdout)?.[1] ?? '', output };
}
