/**
 * Generates docs/nat-code-path.md — the walk-through of usernet's NAT and bridged paths — from
 * a real run on this machine (`make docs`). Nothing in the document is typed by hand but the
 * prose: every journey is a `usernet trace` record, every table a ledger difference around a
 * known transfer.
 *
 *   1. netns guest, NAT: `usernet run --netns` (the CLI, as a user runs it), one TCP connection
 *      followed by `usernet trace --json`, then SIZE bytes each way with `usernet stats --json`
 *      read before and after each.
 *   2. netns guest, bridged: the same namespace tap joined to a TapBackend on a test bridge
 *      (in this process, with the same tracer and meter).
 *   3. VMs (unless --no-vm): the test guest booted under QEMU on usernet's virtio-net (vhost-
 *      user) and usernet's RTL8139 (vfio-user), each on NAT and on the bridge, iperf3 SIZE bytes
 *      each way; a NIC that cannot run here is reported with the reason.
 *   4. The summary: bytes copied per byte of the transfer, each way, per path and NIC.
 *
 * Options: --out FILE (docs/nat-code-path.md), --size BYTES (8 MiB), --no-vm, --nics LIST
 * (virtio,rtl8139), --json FILE (also write the raw figures, for tests). Needs root. Every
 * namespace, process and socket made here is removed, whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { withSandbox, type Sandbox } from '../test/helpers/netns';
import { controlRequest } from '../src/control/client';
import { globalMeter, type StageSnapshot } from '../src/meter/meter';
import { delta, ledger, type Ledger } from '../src/meter/ledger';
import { STAGES, stageInfo } from '../src/meter/stages';
import { tracer, type TraceRecord } from '../src/meter/trace';
import { formatJourney } from '../src/meter/trace-format';
import { NetnsTapPort } from '../src/transports/netns-tap';
import { bridgeToTap } from '../src/backends/tap';
import { BridgedNetwork } from '../src/vm/bridged-net';
import { NatView } from '../src/backends/nat/trace-view';
import { stopChild } from '../test/helpers/child-process';
import { repoRoot } from '../src/vm/paths';
import { sendFiller } from '../test/helpers/host-servers';

const ROOT = repoRoot();
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

interface Options {
  out: string;
  size: number;
  vm: boolean;
  nics: string[];
  json: string | null;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { out: path.join(ROOT, 'docs', 'nat-code-path.md'), size: 8 * 1024 * 1024, vm: true, nics: ['virtio', 'rtl8139'], json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => argv[++i] ?? '';
    if (a === '--out') o.out = path.resolve(next());
    else if (a === '--size') o.size = Number(next());
    else if (a === '--no-vm') o.vm = false;
    else if (a === '--nics') o.nics = next().split(',');
    else if (a === '--json') o.json = path.resolve(next());
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

// ------------------------------------------------------------------------------- helpers

/** A TCP server on `host` that counts what it gets (sink), or sends `size` bytes (source). */
async function tcpServer(kind: 'sink' | 'source', size: number, host = '127.0.0.1'): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    if (kind === 'sink') {
      sock.resume();
      sock.on('end', () => sock.end());
    } else {
      sendFiller(sock, size);
    }
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** An HTTP-like exchange: the guest sends a request line, the server answers `reply` bytes and closes. */
async function exchangeServer(reply: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => sock.end(Buffer.alloc(reply, 0x41)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Keeps the journeys a section shows: the handshake and the first data segments each way. */
class JourneyPicker {
  readonly picked: { label: string; record: TraceRecord }[] = [];
  private readonly want: Map<string, number>;

  /** `dataOnly`: one data segment each way (the VM sections), else the handshake too. */
  constructor(dataOnly = false) {
    this.want = new Map<string, number>(
      dataOnly
        ? [
            ['data tx', 1],
            ['data rx', 1],
          ]
        : [
            ['SYN', 1],
            ['SYN-ACK', 1],
            ['data tx', 1],
            ['data rx', 1],
            ['ACK tx', 1],
          ],
    );
  }

  take(r: TraceRecord): void {
    const h = r.headers;
    const flags = h.tcpFlags ?? '';
    let label: string | null = null;
    if (r.dir === 'tx' && flags === 'SYN') label = 'SYN';
    else if (r.dir === 'rx' && flags === 'SYN ACK') label = 'SYN-ACK';
    else if ((h.payload ?? 0) > 0) label = r.dir === 'tx' ? 'data tx' : 'data rx';
    else if (r.dir === 'tx' && flags === 'ACK' && this.picked.some((p) => p.label === 'data rx')) label = 'ACK tx';
    if (!label) return;
    const left = this.want.get(label) ?? 0;
    if (left <= 0) return;
    this.want.set(label, left - 1);
    this.picked.push({ label, record: r });
  }
}

const TITLES: Record<string, string> = {
  SYN: "The guest's SYN (guest → host)",
  'SYN-ACK': "usernet's SYN-ACK, sent once the host connect succeeded (host → guest)",
  'SYN-ACK bridged': "The server's SYN-ACK (host → guest)",
  'data tx': 'A data segment from the guest (guest → host)',
  'data rx': 'A data segment to the guest (host → guest)',
  'ACK tx': "The guest's ACK of that data (guest → host)",
};

function journeysMarkdown(picked: { label: string; record: TraceRecord }[]): string {
  const order = ['SYN', 'SYN-ACK', 'data tx', 'data rx', 'ACK tx'];
  const out: string[] = [];
  let n = 0;
  for (const label of order) {
    for (const p of picked.filter((x) => x.label === label)) {
      const title = TITLES[label === 'SYN-ACK' && p.record.path === 'bridged' ? 'SYN-ACK bridged' : label];
      out.push(`#### ${title}`, '', '```text', formatJourney({ ...p.record, id: ++n }, { explain: true }), '```', '');
    }
  }
  return out.join('\n');
}

function num(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** A ledger as a Markdown table (rows with something in them). */
function ledgerTable(l: Ledger): string {
  const rows = l.rows.filter((r) => !r.name.startsWith('pcap.') && !r.name.startsWith('vfio-user.'));
  const out = ['| stage | way | frames | bytes | copies | bytes copied | copies/B | rewrites | ns/B | drops |', '|---|:-:|--:|--:|--:|--:|--:|--:|--:|--:|'];
  for (const r of rows) {
    const way = r.dir === 'tx' ? 'g→h' : r.dir === 'rx' ? 'h→g' : r.dir === 'both' ? '⇄' : '';
    out.push(
      `| \`${r.name}\` | ${way} | ${num(r.frames)} | ${num(r.bytes)} | ${num(r.copies)} | ${num(r.bytesCopied)} | ${r.copiesPerByte ? r.copiesPerByte.toFixed(3) : '—'} | ${num(r.rewrites)} | ${r.nsPerByte ? r.nsPerByte.toFixed(2) : '—'} | ${num(r.drops)} |`,
    );
  }
  return out.join('\n');
}

/**
 * The payload a direction carried, and how it is known: `size` when the transfer is exact
 * (head -c / wc -c in the netns guest); for a VM (iperf3 -n stops writing at n bytes but does
 * not wait for the last ones to arrive) what the host sockets took or gave (NAT), or — bridged,
 * where usernet parses nothing — the guest side's frame bytes less 66 bytes of Ethernet, IPv4
 * and TCP-with-timestamps headers per frame.
 */
function payloadOf(s: Scenario, dir: 'tx' | 'rx', size: number): { bytes: number; basis: string } {
  if (s.exact) return { bytes: size, basis: 'exact' };
  const l = dir === 'tx' ? s.up : s.down;
  if (!l) return { bytes: 0, basis: 'none' };
  const row = (n: string) => l.rows.find((r) => r.name === n);
  if (s.path === 'NAT') {
    const h = row(dir === 'tx' ? 'host.tcp.write' : 'host.tcp.read');
    return { bytes: h?.bytes ?? 0, basis: 'host socket bytes' };
  }
  const g = row(dir === 'tx' ? 'guest.tx' : 'guest.rx') ?? row(dir === 'tx' ? 'netns.tap.read' : 'netns.tap.write');
  return { bytes: g ? Math.max(0, g.bytes - 66 * g.frames) : 0, basis: 'frame bytes − 66 B per frame' };
}

/** Bytes copied, in the stages of direction `dir`, per payload byte of that direction. */
function perTransferByte(s: Scenario, dir: 'tx' | 'rx', size: number): number {
  const l = dir === 'tx' ? s.up : s.down;
  if (!l) return 0;
  const p = payloadOf(s, dir, size).bytes;
  return p > 0 ? (dir === 'tx' ? l.tx.bytesCopied : l.rx.bytesCopied) / p : 0;
}

interface Scenario {
  name: string;
  frontend: string;
  path: 'NAT' | 'bridged';
  /** The transfer is exactly `size` bytes each way (netns: head -c / wc -c). */
  exact: boolean;
  up?: Ledger;
  down?: Ledger;
  picked: { label: string; record: TraceRecord }[];
  note?: string;
  error?: string;
}

// ------------------------------------------------------------------------------- 1. netns NAT

/** `adapter`: the host-socket adapter (USERNET_TCP_HOST); journeys are traced with the default only. */
async function netnsNat(sb: Sandbox, o: Options, adapter: 'node' | 'fd' | null): Promise<Scenario> {
  const sc: Scenario = { name: adapter ? `netns guest, NAT, ${adapter} host sockets` : 'netns guest, NAT', frontend: 'netns tap', path: 'NAT', exact: true, picked: [] };
  const ns = await sb.netns('docnat');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-docs-'));
  sb.defer(() => rmSync(dir, { recursive: true, force: true }));
  const control = path.join(dir, 'control.sock');
  const env = { ...process.env, USERNET_LOG: 'warn', ...(adapter ? { USERNET_TCP_HOST: adapter } : {}) };
  const un = sb.spawn(null, [process.execPath, CLI, 'run', '--netns', ns, '--configure', '--control', control], { env });
  let text = '';
  un.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  for (let i = 0; i < 300 && !/^ready\b/m.test(text); i++) await sleep(100);
  if (!/^ready\b/m.test(text)) throw new Error(`usernet did not start: ${text}`);

  if (!adapter) await traceOneConnection(sb, ns, control, sc);
  await bulk(sb, ns, control, o, sc);
  await stopChild(un, { graceMs: 5000 });
  sc.note = adapter === 'fd' ? 'host sockets on raw fds: send(2) from the guest frame, MSG_PEEK into the guest frame (USERNET_TCP_HOST=fd)' : `host sockets: ${adapter ?? process.env.USERNET_TCP_HOST ?? "the default adapter (Node's net.Socket with rings)"}`;
  return sc;
}

/** One connection (a request, 4,000 bytes back), traced with `usernet trace --json`. */
async function traceOneConnection(sb: Sandbox, ns: string, control: string, sc: Scenario): Promise<void> {
  const ex = await exchangeServer(4000);
  const trace = sb.spawn(null, [process.execPath, CLI, 'trace', '--control', control, '--proto', 'tcp', '--port', String(ex.port), '--json', '--count', '14']);
  let traced = '';
  trace.stdout?.on('data', (d: Buffer) => (traced += d.toString()));
  const traceDone = new Promise<void>((r) => trace.once('exit', () => r()));
  for (let i = 0; i < 200; i++) {
    const s = (await controlRequest(control, { cmd: 'stats' })) as { traceSubscribers?: number };
    if ((s.traceSubscribers ?? 0) > 0) break;
    await sleep(50);
  }
  const r = await sb.exec(ns, ['bash', '-c', `exec 3<>/dev/tcp/10.0.2.2/${ex.port}; printf 'GET /4000 HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3 | wc -c`], 30_000);
  if (r.code !== 0) throw new Error(`exchange: ${r.stderr}`);
  await Promise.race([traceDone, sleep(10_000)]);
  await stopChild(trace, { graceMs: 5000 });
  await ex.close();
  const picker = new JourneyPicker();
  for (const line of traced.split('\n').filter((l) => l.trim())) picker.take(JSON.parse(line) as TraceRecord);
  sc.picked = picker.picked;
}

/** SIZE bytes each way, with the ledger read around each (`usernet stats --json` over the control socket). */
async function bulk(sb: Sandbox, ns: string, control: string, o: Options, sc: Scenario): Promise<void> {
  const stats = async (): Promise<StageSnapshot[]> => ((await controlRequest(control, { cmd: 'stats' })) as { stages: StageSnapshot[] }).stages;
  const sink = await tcpServer('sink', o.size);
  let before = await stats();
  let t = await sb.exec(ns, ['bash', '-c', `head -c ${o.size} /dev/zero > /dev/tcp/10.0.2.2/${sink.port}`], 300_000);
  if (t.code !== 0) throw new Error(`upload: ${t.stderr}`);
  await sleep(300);
  sc.up = ledger(delta(await stats(), before));
  await sink.close();
  const source = await tcpServer('source', o.size);
  before = await stats();
  t = await sb.exec(ns, ['bash', '-c', `cat < /dev/tcp/10.0.2.2/${source.port} | wc -c`], 300_000);
  if (t.code !== 0 || Number(t.stdout.trim()) !== o.size) throw new Error(`download: ${t.stdout} ${t.stderr}`);
  await sleep(300);
  sc.down = ledger(delta(await stats(), before));
  await source.close();
}

// ------------------------------------------------------------------------------- 2. netns bridged

async function netnsBridged(sb: Sandbox, o: Options): Promise<Scenario> {
  const sc: Scenario = { name: 'netns guest, bridged', frontend: 'netns tap', path: 'bridged', exact: true, picked: [] };
  const bnet = await BridgedNetwork.create({ httpFileBytes: 0, iperfServers: 0, label: 'docs' });
  sb.defer(() => bnet.destroy());
  const ns = await sb.netns('docbr');
  const guestTap = NetnsTapPort.open({ netns: ns, ifName: 'tap0', meter: globalMeter });
  const tap = await bnet.openTap({ meter: globalMeter });
  sb.defer(async () => {
    await guestTap.close();
    await tap.close();
  });
  bridgeToTap(guestTap, tap);
  for (const argv of [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'addr', 'add', bnet.guestAddress(0), 'dev', 'tap0'],
    ['ip', 'link', 'set', 'tap0', 'mtu', String(bnet.mtu), 'up'],
  ]) {
    const r = await sb.exec(ns, argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  }
  const server = (kind: 'sink' | 'source' | 'exchange', port: number): string[] => {
    const js =
      kind === 'sink'
        ? `require('net').createServer(s=>{s.resume();s.on('end',()=>s.end())}).listen(${port},'${bnet.hostAddress}',()=>console.log('listening'))`
        : kind === 'source'
          ? `const b=Buffer.alloc(1<<20,90);require('net').createServer(s=>{let left=${o.size};const p=()=>{while(left>0){const k=Math.min(left,b.length);left-=k;if(!s.write(b.subarray(0,k)))return void s.once('drain',p)}s.end()};p()}).listen(${port},'${bnet.hostAddress}',()=>console.log('listening'))`
          : `require('net').createServer(s=>{s.once('data',()=>s.end(Buffer.alloc(4000,65)))}).listen(${port},'${bnet.hostAddress}',()=>console.log('listening'))`;
    return [process.execPath, '-e', js];
  };
  const start = async (argv: string[]): Promise<ChildProcess> => {
    const p = sb.spawn(bnet.netns, argv);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server did not start')), 10_000);
      p.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return p;
  };
  // one connection, traced in this process (the same tracer `usernet trace` reads)
  const exch = await start(server('exchange', 7100));
  const picker = new JourneyPicker();
  const unsubscribe = tracer.subscribe({ proto: 'tcp', port: 7100 }, (r) => picker.take(r));
  const r = await sb.exec(ns, ['bash', '-c', `exec 3<>/dev/tcp/${bnet.hostAddress}/7100; printf 'GET /4000 HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3 | wc -c`], 30_000);
  await sleep(300);
  unsubscribe();
  if (r.code !== 0) throw new Error(`bridged exchange: ${r.stderr}`);
  await stopChild(exch, { graceMs: 5000 });
  sc.picked = picker.picked;

  const sink = await start(server('sink', 7101));
  let before = globalMeter.snapshot();
  let t = await sb.exec(ns, ['bash', '-c', `head -c ${o.size} /dev/zero > /dev/tcp/${bnet.hostAddress}/7101`], 300_000);
  if (t.code !== 0) throw new Error(`bridged upload: ${t.stderr}`);
  await sleep(300);
  sc.up = ledger(delta(globalMeter.snapshot(), before));
  await stopChild(sink, { graceMs: 5000 });
  const source = await start(server('source', 7102));
  before = globalMeter.snapshot();
  t = await sb.exec(ns, ['bash', '-c', `cat < /dev/tcp/${bnet.hostAddress}/7102 | wc -c`], 300_000);
  if (t.code !== 0 || Number(t.stdout.trim()) !== o.size) throw new Error(`bridged download: ${t.stdout} ${t.stderr}`);
  await sleep(300);
  sc.down = ledger(delta(globalMeter.snapshot(), before));
  await stopChild(source, { graceMs: 5000 });
  sc.note = `MTU ${bnet.mtu} bridge; the guest's TSO frames cross as they are, the bridge's frames come segmented`;
  return sc;
}

// ------------------------------------------------------------------------------- 3. VMs

async function vmScenario(o: Options, nic: string, netKind: 'nat' | 'bridged'): Promise<Scenario> {
  const sc: Scenario = { name: `${nic === 'virtio' ? 'virtio-net (vhost-user)' : nic === 'rtl8139' ? 'RTL8139 (vfio-user)' : nic} VM, ${netKind === 'nat' ? 'NAT' : 'bridged'}`, frontend: nic, path: netKind === 'nat' ? 'NAT' : 'bridged', exact: false, picked: [] };
  // imported here: the VM library pulls QEMU helpers the netns sections do not need
  const { runGuestOnUsernet } = await import('../src/cli/vm-session');
  let iperf: ChildProcess | null = null;
  let port = 5201;
  if (netKind === 'nat') {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    iperf = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    await sleep(500);
  }
  const picker = new JourneyPicker(true);
  let unsubscribe: (() => void) | null = null;
  let before: StageSnapshot[] = [];
  let middle: StageSnapshot[] = [];
  try {
    const host = netKind === 'nat' ? '10.0.2.2' : '10.0.3.1';
    const n = Math.round(o.size / MiB);
    const res = await runGuestOnUsernet({
      nic: nic as 'virtio',
      net: netKind,
      timeoutMs: 240_000,
      // markers on the serial console delimit the two transfers; the pauses let the (slow)
      // serial line deliver each marker before the next transfer starts
      command: `echo MARK-START && sleep 2 && iperf3 -c ${host} -p ${port} -n ${n}M >/dev/null && echo MARK-UP-DONE && sleep 2 && iperf3 -c ${host} -p ${port} -n ${n}M -R >/dev/null && echo MARK-DOWN-DONE`,
      onNetwork: ({ network }) => {
        if (network.stack) tracer.natView = new NatView(network.stack);
      },
      onLine: (line) => {
        if (line.includes('MARK-START')) {
          before = globalMeter.snapshot();
          unsubscribe = tracer.subscribe({ proto: 'tcp', port }, (r) => picker.take(r));
        } else if (line.includes('MARK-UP-DONE')) {
          middle = globalMeter.snapshot();
          sc.up = ledger(delta(middle, before));
        } else if (line.includes('MARK-DOWN-DONE')) {
          sc.down = ledger(delta(globalMeter.snapshot(), middle));
        }
      },
    });
    if (res.exitCode !== 0) throw new Error(`guest command failed (${res.exitCode}): ${res.output.slice(-400)}`);
  } catch (err) {
    sc.error = (err as Error).message.split('\n')[0];
  } finally {
    (unsubscribe as (() => void) | null)?.();
    tracer.natView = null;
    if (iperf) await stopChild(iperf, { graceMs: 5000 });
  }
  sc.picked = picker.picked;
  sc.note = 'iperf3 in the guest (the ACKs of the other direction are in each figure too)';
  return sc;
}

// ------------------------------------------------------------------------------- the document

const DIAGRAM = `\`\`\`mermaid
flowchart LR
  subgraph guest["guest"]
    G1["netns kernel (tap0)"]
    G2["virtio-net driver"]
    G3["8139too driver"]
  end
  subgraph front["frontends"]
    NR["netns.tap.read / netns.tap.write"]
    VQ["guest.tx · device.dma.tx / device.dma.rx · guest.rx<br/>(virtio rings over vhost-user)"]
    RT["guest.tx · device.dma · guest.rx<br/>(RTL8139 over vfio-user)"]
  end
  subgraph nat["NAT: backends/nat"]
    P["nat.parse.tx → nat.ip.tx"]
    L["nat.lookup.tcp / nat.flows.tcp"]
    T["nat.tcp.tx (re-termination)"]
    B["nat.tcp.rx (TCP header) → nat.output.rx (Ethernet + IP header, batch)"]
  end
  subgraph host["host sockets"]
    HW["host.tcp.write"]
    HR["host.tcp.read"]
  end
  subgraph br["bridged: backends/tap"]
    TW["tap.write"]
    TR["tap.read"]
  end
  G1 <--> NR
  G2 <--> VQ
  G3 <--> RT
  NR & VQ & RT --> P --> L --> T --> HW --> K[("host kernel<br/>TCP/IP")]
  K --> HR --> B --> NR & VQ & RT
  NR & VQ & RT -. bridged .-> TW --> BR[("Linux bridge")]
  BR -. bridged .-> TR -.-> NR & VQ & RT
\`\`\``;

const ASCII = `\`\`\`text
guest → host, NAT                                    guest → host, bridged
  netns.tap.read   (kernel copies the frame in)        netns.tap.read   (kernel copies the frame in)
  nat.parse.tx     Ethernet: for the gateway?          tap.write        (kernel copies it out, as it is)
  nat.ip.tx        IPv4 checks, TTL
  nat.lookup.tcp   the flow, by 5-tuple              host → guest, bridged
  nat.tcp.tx       re-termination: the segment ends    tap.read         (kernel copies the frame in)
  host.tcp.write   payload → host socket (copy)        netns.tap.write  (kernel copies it out, as it is)
host → guest, NAT
  nat.output.rx    slot taken, Ethernet + IP header written
  host.tcp.read    payload ← host socket (copy)
  nat.tcp.rx       TCP header: usernet's seq/ack/window
  nat.output.rx    queued; handed on once per batch
  netns.tap.write  (kernel copies the frame out)
\`\`\``;

function stageTable(): string {
  const out = ['| stage | way | where | what one copy moves |', '|---|:-:|---|---|'];
  for (const s of Object.values(STAGES)) {
    if (s.layer === 'capture' || s.layer === 'wire' || s.name.startsWith('vfio-user') || s.name.startsWith('link.') && s.name !== 'link.switch') continue;
    const way = s.dir === 'tx' ? 'g→h' : s.dir === 'rx' ? 'h→g' : s.dir === 'both' ? '⇄' : '';
    out.push(`| \`${s.name}${s.name === 'nat.lookup' || s.name === 'nat.flows' ? '.<table>' : ''}\` | ${way} | ${s.fn.replace(/\|/g, '\\|')} | ${s.copy ? `${s.copy.from} → ${s.copy.to}` : '—'} |`);
  }
  return out.join('\n');
}

function summaryTable(scenarios: Scenario[], size: number): string {
  const out = ['| path | frontend | guest → host | host → guest | note |', '|---|---|--:|--:|---|'];
  for (const s of scenarios) {
    if (s.error) {
      out.push(`| ${s.path} | ${s.frontend} | n/a | n/a | not run here: ${s.error.replace(/\|/g, '\\|')} |`);
      continue;
    }
    const up = s.up ? perTransferByte(s, 'tx', size).toFixed(2) : 'n/a';
    const down = s.down ? perTransferByte(s, 'rx', size).toFixed(2) : 'n/a';
    const basis = payloadOf(s, 'tx', size).basis;
    out.push(`| ${s.path} | ${s.frontend} | ${up} | ${down} | ${basis === 'exact' ? '' : `payload: ${basis}; `}${s.note ?? ''} |`);
  }
  return out.join('\n');
}

function scenarioSection(s: Scenario, size: number, n: number): string {
  const out = [`## ${n}. ${s.name}`, ''];
  if (s.error) {
    out.push(`Not run on this machine: \`${s.error}\`.`, '');
    return out.join('\n');
  }
  if (s.note) out.push(`*${s.note}.*`, '');
  if (s.picked.length > 0) {
    out.push(`### One TCP connection, packet by packet`, '', 'Each block is one packet: the stages it met in order (indented one step per stage), the function at each, the copies (from → to, bytes), the header fields rewritten (old → new) and the time from one stage to the next. The `why` lines are `usernet trace --explain`.', '');
    out.push(journeysMarkdown(s.picked));
  }
  for (const [way, l, dir] of [
    ['guest → host', s.up, 'tx'],
    ['host → guest', s.down, 'rx'],
  ] as const) {
    if (!l) continue;
    const totals = dir === 'tx' ? l.tx : l.rx;
    const p = payloadOf(s, dir, size);
    out.push(
      `### ${s.exact ? `${num(size)} bytes` : `iperf3 -n ${num(size)}`} ${way}: the ledger`,
      '',
      ledgerTable(l),
      '',
      `**${perTransferByte(s, dir, size).toFixed(2)} bytes copied per payload byte** ${way} (${num(totals.bytesCopied)} B in ${num(totals.copies)} copies over ${num(p.bytes)} payload bytes${p.basis === 'exact' ? '' : ` — ${p.basis}`}; ${num(totals.rewrites)} header fields rewritten on the way).`,
      '',
    );
  }
  return out.join('\n');
}

function whatItShows(scenarios: Scenario[], size: number): string {
  const nat = scenarios.find((s) => s.name === 'netns guest, NAT' && !s.error);
  const fd = scenarios.find((s) => s.name === 'netns guest, NAT, fd host sockets' && !s.error);
  const br = scenarios.find((s) => s.name === 'netns guest, bridged' && !s.error);
  if (!nat?.up || !br?.up || !nat.down || !br.down) return '';
  const f = (sc: Scenario, d: 'tx' | 'rx'): string => perTransferByte(sc, d, size).toFixed(2);
  const hostW = nat.up.rows.find((r) => r.name === 'host.tcp.write');
  const segs = nat.up.rows.find((r) => r.name === 'nat.tcp.tx');
  const fdText = fd?.up && fd.down ? ` With the fd adapter (\`USERNET_TCP_HOST=fd\`: send(2) straight from the guest's frame, MSG_PEEK straight into the frame) NAT copied ${f(fd, 'tx')} and ${f(fd, 'rx')}: as many copies as bridging.` : '';
  return [
    '## What the numbers say',
    '',
    `- **Copies.** With the netns guest, NAT copied ${f(nat, 'tx')} bytes per byte guest → host and ${f(nat, 'rx')} host → guest; bridged copied ${f(br, 'tx')} and ${f(br, 'rx')}. Bridged, the two copies are the two taps' (the kernel copies the frame into usernet, and out again). NAT's are the tap's and the host socket's — ${hostW ? (hostW.bytesCopied / hostW.bytes).toFixed(2) : '?'} per payload byte at \`host.tcp.write\` with the default adapter, Node's sockets, which go through a ring.${fdText}`,
    `- **Work per byte.** Bridged, a frame is forwarded as it is: no parse, no lookup, no rewrite. NAT terminates every segment: ${segs ? num(segs.frames) : '?'} guest segments for ${num(size)} bytes went through \`nat.tcp.tx\` (sequence and window checks, ACK processing), each with its flow looked up, and usernet built and sent its own ACKs and window updates back (\`nat.tcp.rx\`). The host kernel runs a second TCP for the same bytes.`,
    `- **Rewrites.** Bridged: none — the frames reach the bridge byte for byte. NAT: the guest's address and port become the host socket's on the way out, and back on the way in (3 fields per segment towards 10.0.2.2, which is the host's 127.0.0.1), and every header towards the guest is usernet's own: its sequence numbers, its window, a fresh IP header and checksum.`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (!existsSync(CLI)) throw new Error(`build first (make build): ${CLI} is missing`);
  const scenarios: Scenario[] = [];
  await withSandbox(async (sb) => {
    scenarios.push(await netnsNat(sb, o, null));
    scenarios.push(await netnsNat(sb, o, 'fd'));
    scenarios.push(await netnsBridged(sb, o));
  });
  if (o.vm) {
    for (const nic of o.nics) for (const netKind of ['nat', 'bridged'] as const) scenarios.push(await vmScenario(o, nic, netKind));
  }
  const kernel = os.release();
  const md = [
    '# The NAT code path, stage by stage',
    '',
    `> Generated by \`bench/docs-nat-code-path.ts\` (\`make docs\`) on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC — Linux ${kernel}, Node ${process.version}, ${os.cpus().length} CPUs. Every journey and every number below comes from that run; regenerate it to see your machine's. Stage names and what they mean: \`src/meter/stages.ts\`.`,
    '',
    'usernet is a user-mode network for VMs: a guest\'s frames reach it through a frontend (here: a network namespace\'s tap, and a VM\'s virtio-net or RTL8139), and leave either **bridged** — written to a tap on a Linux bridge, as they are — or through the **NAT**, a TCP/IP stack of its own that ends the guest\'s connections and opens host sockets for them, as QEMU\'s `-netdev user`, slirp4netns and passt do. Every place a frame is counted is a *stage* of the meter; `usernet stats` shows their counters, `usernet trace` one packet\'s walk through them.',
    '',
    '## The stages',
    '',
    DIAGRAM,
    '',
    'The same, as the order a packet meets them:',
    '',
    ASCII,
    '',
    stageTable(),
    '',
    ...scenarios.map((s, i) => scenarioSection(s, o.size, i + 1)),
    whatItShows(scenarios, o.size),
    '## What NAT costs: bytes copied per payload byte',
    '',
    `${num(o.size)} bytes each way, the copies of every stage on the way added up (headers and the frames that carry no payload included), divided by the payload that crossed (exact for the netns guest; for the VMs as the note says):`,
    '',
    summaryTable(scenarios, o.size),
    '',
    '## Regenerate, or look at your own',
    '',
    '```sh',
    'make docs                                             # this document, from a new run',
    'usernet run --netns NS --configure --control /tmp/u.sock &',
    'usernet trace --control /tmp/u.sock --proto tcp --port 5201 --explain --count 5',
    'usernet stats --control /tmp/u.sock --watch           # the ledger, live',
    'usernet run … --pcap both.pcapng --pcap-host both.pcapng   # both sides of the NAT for Wireshark',
    '```',
    '',
  ].join('\n');
  mkdirSync(path.dirname(o.out), { recursive: true });
  writeFileSync(o.out, md);
  if (o.json) {
    const figures = scenarios.map((s) => ({
      name: s.name,
      path: s.path,
      frontend: s.frontend,
      error: s.error ?? null,
      upCopiesPerByte: s.up ? perTransferByte(s, 'tx', o.size) : null,
      downCopiesPerByte: s.down ? perTransferByte(s, 'rx', o.size) : null,
      payloadBasis: payloadOf(s, 'tx', o.size).basis,
      up: s.up?.rows.map((r) => ({ name: r.name, frames: r.frames, bytes: r.bytes, copies: r.copies, bytesCopied: r.bytesCopied, rewrites: r.rewrites })) ?? null,
      down: s.down?.rows.map((r) => ({ name: r.name, frames: r.frames, bytes: r.bytes, copies: r.copies, bytesCopied: r.bytesCopied, rewrites: r.rewrites })) ?? null,
      journeys: s.picked.map((p) => ({ label: p.label, stages: p.record.hops.map((h) => h.stage), fns: p.record.hops.map((h) => stageInfo(h.stage)?.fn ?? '') })),
    }));
    writeFileSync(o.json, JSON.stringify({ size: o.size, scenarios: figures }, null, 2));
  }
  process.stdout.write(`wrote ${path.relative(process.cwd(), o.out)}\n${summaryTable(scenarios, o.size)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`docs-nat-code-path: ${String((err as Error).stack ?? err)}\n`);
  process.exitCode = 1;
});
