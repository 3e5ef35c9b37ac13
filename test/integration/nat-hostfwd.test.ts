/**
 * Port forwards host→guest through usernet: given at start (`--hostfwd`, QEMU syntax) and
 * added, listed and removed at run time through the control socket with the real CLI
 * (`usernet ctl --control PATH hostfwd add|list|remove`). A connection from the host side
 * reaches a server in the guest namespace and carries data both ways; a removed forward no
 * longer accepts.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { testIf } from '../helpers/env';
import { withNatGuest, type NatGuest } from '../helpers/nat-guest';
import { freePort } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun');

const GUEST_SERVER = `
const net = require('net'), dgram = require('dgram');
const port = +process.argv[1];
net.createServer((s) => {
  s.on('error', () => {});
  let n = 0;
  s.on('data', (d) => { n += d.length; s.write(d); });       // echo everything
  s.on('end', () => s.end('guest saw ' + n + ' bytes from ' + s.remoteAddress + '\\n'));
}).listen(port, '0.0.0.0', () => {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(Buffer.concat([Buffer.from('udp echo: '), m]), r.port, r.address));
  u.bind(port, '0.0.0.0', () => console.log('listening'));
});
`;

async function startGuestServer(g: NatGuest, port: number): Promise<void> {
  const child = g.spawn([process.execPath, '-e', GUEST_SERVER, String(port)]);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('guest server did not start')), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (c) => reject(new Error(`guest server exited ${c}`)));
  });
}

/** Connect from the host, send `payload`, half-close, collect everything until the end. */
function exchange(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(payload));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.setTimeout(30_000, () => s.destroy(new Error('timeout')));
  });
}

function udpExchange(port: number, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      u.close();
      reject(new Error('no UDP reply'));
    }, 10_000);
    u.on('message', (m) => {
      clearTimeout(timer);
      u.close();
      resolve(m.toString());
    });
    u.send(msg, port, '127.0.0.1');
  });
}

async function checkCarries(t: { is: (a: unknown, b: unknown, m?: string) => void; true: (v: boolean, m?: string) => void }, port: number): Promise<void> {
  const payload = randomBytes(1 << 20);
  const reply = await exchange(port, payload);
  t.true(reply.subarray(0, payload.length).equals(payload), 'the echo carries the data back');
  const tail = reply.subarray(payload.length).toString();
  t.true(tail.startsWith(`guest saw ${payload.length} bytes from `), tail);
}

test('--hostfwd at start and hostfwd add/list/remove at run time through usernet ctl', async (t) => {
  const hp1 = await freePort();
  const hp2 = await freePort();
  const hpu = await freePort();
  await withNatGuest({ args: ['--hostfwd', `tcp:127.0.0.1:${hp1}-:8080`, '-o', `hostfwd=udp:127.0.0.1:${hpu}-:8080`] }, async (g) => {
    await startGuestServer(g, 8080);
    await checkCarries(t, hp1);
    t.is(await udpExchange(hpu, 'ping'), 'udp echo: ping');

    const ctl = (...a: string[]) => g.cli(['ctl', '--control', g.control, ...a]);
    const add = await ctl('hostfwd', 'add', `tcp:127.0.0.1:${hp2}-10.0.2.15:8080`);
    t.is(add.code, 0, add.stderr);
    await checkCarries(t, hp2);

    const list = await ctl('hostfwd', 'list');
    t.is(list.code, 0, list.stderr);
    const rules = list.stdout.trim().split('\n');
    t.true(rules.some((r) => r.startsWith(`tcp:127.0.0.1:${hp1}-`)), list.stdout);
    t.true(rules.some((r) => r.startsWith(`tcp:127.0.0.1:${hp2}-`)), list.stdout);
    t.true(rules.some((r) => r.startsWith(`udp:127.0.0.1:${hpu}-`)), list.stdout);

    const dup = await ctl('hostfwd', 'add', `tcp:127.0.0.1:${hp2}-10.0.2.15:8080`);
    t.not(dup.code, 0, 'adding a forward on a port already forwarded fails');

    const rm = await ctl('hostfwd', 'remove', `tcp:127.0.0.1:${hp2}-10.0.2.15:8080`);
    t.is(rm.code, 0, rm.stderr);
    await t.throwsAsync(exchange(hp2, Buffer.from('x')), { code: 'ECONNREFUSED' });
    const list2 = await ctl('hostfwd', 'list', '--json');
    t.is(list2.code, 0, list2.stderr);
    t.false(list2.stdout.includes(`:${hp2}-`));
    await checkCarries(t, hp1); // the other forward is untouched

    const bad = await ctl('hostfwd', 'add', 'sctp:nonsense');
    t.not(bad.code, 0);
    t.regex(bad.stderr, /usernet: /);
    const missing = await ctl('hostfwd', 'remove', `tcp:127.0.0.1:${hp2}-10.0.2.15:8080`);
    t.not(missing.code, 0);

    const stats = await ctl('stats');
    t.is(stats.code, 0, stats.stderr);
    const j = JSON.parse(stats.stdout) as { stages: { name: string }[] };
    t.true(j.stages.some((s) => s.name === 'netns.tap.read'));
  });
});
