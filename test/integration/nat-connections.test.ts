/**
 * TCP behaviour through usernet's NAT seen by real applications in the guest namespace (small
 * Node scripts run there, talking to servers this test runs on the host's 127.0.0.1 via
 * 10.0.2.2): 500 concurrent connections each moving data, half-close, connection refused.
 */
import net from 'node:net';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { testIf } from '../helpers/env';
import { withNatGuest, type NatGuest } from '../helpers/nat-guest';
import { freePort } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun');

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 1024 }, resolve));
  return (server.address() as AddressInfo).port;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Run a Node script in the guest namespace; its stdout is parsed as JSON. */
async function guestNode(g: NatGuest, script: string, args: string[], timeoutMs = 120_000): Promise<unknown> {
  const r = await g.exec([process.execPath, '-e', script, ...args], timeoutMs);
  if (r.code !== 0) throw new Error(`guest script failed (${r.code}): ${r.stderr}\n${r.stdout}\nusernet: ${g.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout);
}

const MANY_CLIENT = `
const net = require('net'), crypto = require('crypto');
const [host, port, count, size] = [process.argv[1], +process.argv[2], +process.argv[3], +process.argv[4]];
let done = 0, ok = 0, failed = [];
const results = [];
function payload(i) { const b = Buffer.alloc(size); for (let k = 0; k < size; k++) b[k] = (i * 31 + k * 7) & 0xff; return b; }
for (let i = 0; i < count; i++) {
  const data = payload(i);
  const want = crypto.createHash('sha256').update(data).digest('hex');
  const got = crypto.createHash('sha256');
  let n = 0;
  const s = net.connect(port, host, () => { s.end(data); });
  s.on('data', (d) => { got.update(d); n += d.length; });
  s.on('end', () => { const h = got.digest('hex'); if (h === want && n === size) ok++; else failed.push(i + ':' + n); });
  s.on('error', (e) => failed.push(i + ':' + e.code));
  s.on('close', () => { if (++done === count) console.log(JSON.stringify({ ok, failed: failed.slice(0, 20), nfailed: failed.length })); });
}
setTimeout(() => { console.log(JSON.stringify({ ok, failed: failed.slice(0, 20), nfailed: count - ok, timeout: true, done })); process.exit(0); }, 100000).unref();
`;

test('500 concurrent connections each move 64 KiB both ways; all complete', async (t) => {
  let peak = 0;
  let open = 0;
  const server = net.createServer((s) => {
    open++;
    peak = Math.max(peak, open);
    s.on('close', () => open--);
    s.on('error', () => {});
    s.pipe(s); // echo; ends our side when the client ends its side
  });
  server.maxConnections = 2000;
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  await withNatGuest({}, async (g) => {
    const r = (await guestNode(g, MANY_CLIENT, ['10.0.2.2', String(port), '500', String(64 * 1024)], 150_000)) as {
      ok: number;
      nfailed: number;
      failed: string[];
    };
    t.is(r.ok, 500, JSON.stringify(r));
    t.is(r.nfailed, 0);
    t.log(`peak concurrent connections at the host server: ${peak}`);
  });
});

const HALF_CLOSE_CLIENT = `
const net = require('net');
const s = net.connect({ port: +process.argv[2], host: process.argv[1], allowHalfOpen: true }, () => {
  s.write('hello from the guest, ');
  s.end('and that is all\\n'); // FIN: our write side is shut, the read side stays open
});
let reply = '';
s.setEncoding('utf8');
s.on('data', (d) => reply += d);
s.on('end', () => console.log(JSON.stringify({ reply })));
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); });
`;

test('half-close: a client that shuts its write side still receives the reply', async (t) => {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', () => {});
    s.on('end', () => {
      // the guest has sent FIN; answer after a pause so the reply travels on a half-closed connection
      setTimeout(() => {
        s.write(`you sent ${Buffer.byteLength(got)} bytes: `);
        s.end(createHash('sha256').update(got).digest('hex') + '\n');
      }, 300);
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  await withNatGuest({}, async (g) => {
    const r = (await guestNode(g, HALF_CLOSE_CLIENT, ['10.0.2.2', String(port)])) as { reply?: string; error?: string };
    const sent = 'hello from the guest, and that is all\n';
    t.is(r.error, undefined);
    t.is(r.reply, `you sent ${sent.length} bytes: ${createHash('sha256').update(sent).digest('hex')}\n`);
  });
});

const CONNECT_CLIENT = `
const net = require('net');
const s = net.connect(+process.argv[2], process.argv[1]);
s.on('connect', () => { console.log(JSON.stringify({ connected: true })); s.destroy(); });
s.on('error', (e) => console.log(JSON.stringify({ error: e.code })));
`;

test('connection refused on the host reaches the guest as ECONNREFUSED', async (t) => {
  const port = await freePort(); // nobody listens there
  await withNatGuest({}, async (g) => {
    const r = (await guestNode(g, CONNECT_CLIENT, ['10.0.2.2', String(port)], 30_000)) as { error?: string };
    t.is(r.error, 'ECONNREFUSED');
  });
});
