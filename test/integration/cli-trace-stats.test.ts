/**
 * `usernet trace`, `usernet stats` and `--metrics` against a running `usernet run --netns`: a
 * guest TCP connection (an HTTP GET with curl) traced stage by stage, both ways, with the
 * copies and the NAT's rewrites named; the stats table, its JSON, the per-flow view, the
 * refreshing view; the Prometheus endpoint.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { testIf } from '../helpers/env';
import { CLI, withNatGuest, type NatGuest } from '../helpers/nat-guest';
import { freePort, startBlobServer } from '../helpers/host-servers';
import type { TraceRecord } from '../../src/meter/trace';

const test = testIf('root', 'netns', 'tun', 'cmd:curl');

const TX_STAGES = ['netns.tap.read', 'nat.parse.tx', 'nat.ip.tx', 'nat.lookup.tcp', 'nat.flows.tcp', 'nat.tcp.tx', 'host.tcp.write'];
const RX_STAGES = ['host.tcp.read', 'nat.tcp.rx', 'nat.output.rx', 'netns.tap.write'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait until `n` trace clients are subscribed (the CLI has started and asked). */
async function subscribed(g: NatGuest, n: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const s = (await g.ctl({ cmd: 'stats' })) as { traceSubscribers?: number };
    if ((s.traceSubscribers ?? 0) >= n) return;
    await sleep(50);
  }
  throw new Error('usernet trace did not subscribe');
}

test('usernet trace follows a guest TCP connection through every stage, both ways, with copies and rewrites', async (t) => {
  const server = await startBlobServer();
  t.teardown(() => server.close());
  await withNatGuest({}, async (g) => {
    const json = g.cli(['trace', '--control', g.control, '--proto', 'tcp', '--port', String(server.port), '--count', '8', '--json'], 60_000);
    await subscribed(g, 1);
    const r = await g.exec(['curl', '-sS', '--fail', '-o', '/dev/null', `http://10.0.2.2:${server.port}/blob/100000`], 30_000);
    t.is(r.code, 0, r.stderr);
    const out = await json;
    t.is(out.code, 0, out.stderr + out.stdout);
    const records = out.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as TraceRecord);
    t.is(records.length, 8);
    const seen = new Set(records.flatMap((x) => x.hops.map((h) => h.stage)));
    for (const s of [...TX_STAGES, ...RX_STAGES]) t.true(seen.has(s), `stage ${s} in some journey: ${[...seen].join(' ')}`);
    for (const x of records) {
      t.is(x.path, 'nat');
      t.truthy(x.hops[0].fn, 'each hop names its function');
      t.true([x.headers.srcPort, x.headers.dstPort].includes(server.port));
    }
    const syn = records.find((x) => x.dir === 'tx' && x.headers.tcpFlags === 'SYN');
    t.truthy(syn, 'the SYN');
    t.true(syn!.hops.some((h) => h.stage === 'nat.flows.tcp'), 'the SYN creates the flow');
    const get = records.find((x) => x.dir === 'tx' && (x.headers.payload ?? 0) > 0);
    t.truthy(get, 'the GET request');
    const write = get!.hops.find((h) => h.stage === 'host.tcp.write')!;
    t.is(write.copies[0].bytes > 0, true, 'the payload copied to the host socket');
    t.truthy(get!.host, 'the host side of the flow');
    t.regex(get!.host!.local, /^127\.0\.0\.1:\d+$/);
    t.is(get!.host!.remote, `127.0.0.1:${server.port}`);
    const rewrites = get!.hops.flatMap((h) => h.rewrites);
    const src = rewrites.find((w) => w.field === 'source');
    t.truthy(src);
    t.regex(src!.from, /^10\.0\.2\.15:\d+$/);
    t.is(src!.to, get!.host!.local);
    t.deepEqual(
      rewrites.find((w) => w.field === 'destination'),
      { field: 'destination', from: `10.0.2.2:${server.port}`, to: `127.0.0.1:${server.port}`, note: 'the gateway is the host loopback' },
    );
    const data = records.find((x) => x.dir === 'rx' && (x.headers.payload ?? 0) > 0);
    t.truthy(data, 'data towards the guest');
    t.deepEqual(
      data!.hops.map((h) => h.stage).filter((s) => RX_STAGES.includes(s)),
      ['nat.output.rx', 'host.tcp.read', 'nat.tcp.rx', 'nat.output.rx', 'netns.tap.write'],
      'header slot, payload from the host socket, TCP header, queued, written to the tap',
    );
    t.true(data!.copies >= 2 && data!.bytesCopied >= (data!.headers.payload ?? 0) * 2, 'host socket copy and tap write');
    t.true(data!.hops.flatMap((h) => h.rewrites).some((w) => w.field === 'destination' && w.to.startsWith('10.0.2.15:')));

    // text, with --explain, data journeys only
    const text = g.cli(['trace', '--control', g.control, '--port', String(server.port), '--payload', '--count', '2', '--explain'], 60_000);
    await subscribed(g, 1);
    const r2 = await g.exec(['curl', '-sS', '--fail', '-o', '/dev/null', `http://10.0.2.2:${server.port}/blob/5000`], 30_000);
    t.is(r2.code, 0, r2.stderr);
    const tr = await text;
    t.is(tr.code, 0, tr.stderr);
    t.regex(tr.stdout, /^#\d+ guest→host TCP 10\.0\.2\.15:\d+ → 10\.0\.2\.2:\d+ \[ACK PSH\] \d+ B payload · NAT/m);
    t.regex(tr.stdout, /└ host\.tcp\.write +[\d.]+ [nµm]?s +HostSocket\.write/);
    t.regex(tr.stdout, /copy +the guest's frame .* → the host socket/);
    t.regex(tr.stdout, /rewrite +source: 10\.0\.2\.15:\d+ → 127\.0\.0\.1:\d+/);
    t.regex(tr.stdout, /why +TCP re-termination/);
    t.regex(tr.stdout, /host→guest TCP 10\.0\.2\.2:\d+ → 10\.0\.2\.15:\d+/);
    t.regex(tr.stderr, /2 journeys/);
    const { code } = await g.stop();
    t.is(code, 0, g.stderr);
  });
});

test('usernet stats: table, JSON, flows, --watch; --metrics serves the ledger to Prometheus', async (t) => {
  const server = await startBlobServer();
  t.teardown(() => server.close());
  const port = await freePort();
  await withNatGuest({ args: ['--metrics', `127.0.0.1:${port}`] }, async (g) => {
    // a connection that stays open while the flows are listed
    const slow = g.spawn(['bash', '-c', `exec 3<>/dev/tcp/10.0.2.2/${server.port}; printf 'GET /blob/1000 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; sleep 20`]);
    t.teardown(() => {
      try {
        if (slow.pid && slow.exitCode === null) process.kill(slow.pid, 'SIGKILL');
      } catch {
        /* the sandbox stopped it already */
      }
    });
    const r = await g.exec(['curl', '-sS', '--fail', '-o', '/dev/null', `http://10.0.2.2:${server.port}/blob/2000000`], 30_000);
    t.is(r.code, 0, r.stderr);
    await sleep(500);
    const table = await g.cli(['stats', '--control', g.control]);
    t.is(table.code, 0, table.stderr);
    t.regex(table.stdout, /stage +way +frames +bytes +copies +bytes copied +copies\/B +rewrites +ns\/B +drops/);
    for (const s of ['netns.tap.read', 'nat.tcp.tx', 'host.tcp.write', 'host.tcp.read', 'nat.tcp.rx', 'netns.tap.write']) t.regex(table.stdout, new RegExp(`^${s.replace(/\./g, '\\.')} `, 'm'));
    t.true(table.stdout.indexOf('netns.tap.read') < table.stdout.indexOf('host.tcp.write'), 'guest→host rows in path order');
    t.true(table.stdout.indexOf('host.tcp.read') < table.stdout.indexOf('netns.tap.write'), 'host→guest rows in path order');
    t.regex(table.stdout, /host→guest: [\d.]+ bytes copied per payload byte/);
    const js = await g.cli(['stats', '--control', g.control, '--json']);
    const snap = JSON.parse(js.stdout) as { stages: { name: string; bytes: number }[]; meter: string; tcp: Record<string, number> };
    t.is(snap.meter, 'on');
    t.true(snap.stages.find((s) => s.name === 'host.tcp.read')!.bytes >= 2_000_000);
    t.true(snap.tcp.bytesToGuest >= 2_000_000);
    const flows = await g.cli(['stats', '--control', g.control, '--flows']);
    t.is(flows.code, 0, flows.stderr);
    t.regex(flows.stdout, new RegExp(`tcp +10\\.0\\.2\\.15:\\d+ +10\\.0\\.2\\.2:${server.port} +127\\.0\\.0\\.1:\\d+ +127\\.0\\.0\\.1:${server.port} +[A-Z_0-9]+ `));
    t.regex(flows.stdout, /TCP, all connections so far/);
    const fj = JSON.parse((await g.cli(['stats', '--control', g.control, '--flows', '--json'])).stdout) as { flows: { proto: string; windowStalls?: number; retransmits?: number }[] };
    t.true(fj.flows.some((f) => f.proto === 'tcp' && typeof f.windowStalls === 'number' && typeof f.retransmits === 'number'));

    // --watch: refreshes with rates (two JSON lines, then stopped by PID)
    const w = spawn(process.execPath, [CLI, 'stats', '--control', g.control, '--watch', '0.3', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let wout = '';
    w.stdout.setEncoding('utf8');
    w.stdout.on('data', (d: string) => (wout += d));
    for (let i = 0; i < 50 && wout.split('\n').filter(Boolean).length < 2; i++) await sleep(100);
    if (w.pid) process.kill(w.pid, 'SIGINT');
    await new Promise((res) => w.once('exit', res));
    const lines = wout.split('\n').filter(Boolean);
    t.true(lines.length >= 2, wout);
    const second = JSON.parse(lines[1]) as { rates: { name: string }[]; interval: number };
    t.true(Array.isArray(second.rates) && second.interval > 0);

    // Prometheus text format
    const body = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (b += d));
        res.on('end', () => resolve(b));
      }).on('error', reject);
    });
    t.regex(body, /# TYPE usernet_stage_bytes_copied_total counter/);
    t.regex(body, /usernet_stage_bytes_total\{stage="host\.tcp\.read",way="rx"\} \d+/);
    t.regex(body, /usernet_meter_enabled 1/);
    const { code } = await g.stop();
    t.is(code, 0, g.stderr);
  });
});
