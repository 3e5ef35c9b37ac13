import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { unixDgram, unixRecvFrom, unixSendTo, FdWatcher, POLL_READABLE, addonLoadError } from '../../src/native';
import {
  QemuDgramPort,
  QemuStreamPort,
  connectQemuStream,
  listenQemuStream,
  parseQemuSocketAddress,
  qemuStreamArgs,
} from '../../src/transports/qemu-socket';
import { missing } from '../helpers/env';

const nativeTest = addonLoadError ? test.skip : test;

function dir(): string {
  return mkdtempSync(join(tmpdir(), 'usernet-qs-'));
}

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i + seed * 7) & 0xff;
  return f;
}

function encode(frames: Uint8Array[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(f.length);
    parts.push(h, Buffer.from(f));
  }
  return Buffer.concat(parts);
}

/** Decode a length-prefixed stream incrementally. */
class Decoder {
  frames: Buffer[] = [];
  private buf = Buffer.alloc(0);
  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + len) break;
      this.frames.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
  }
}

function nextGuest(server: { once(e: 'guest', l: (p: QemuStreamPort) => void): unknown }): Promise<QemuStreamPort> {
  return new Promise((resolve) => server.once('guest', resolve));
}

function until(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (cond()) resolve();
      else if (Date.now() - started > ms) reject(new Error(`gave up waiting for ${what}`));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

test('socket address parsing', (t) => {
  t.deepEqual(parseQemuSocketAddress('/run/x.sock'), { type: 'unix', path: '/run/x.sock' });
  t.deepEqual(parseQemuSocketAddress('unix:rel.sock'), { type: 'unix', path: 'rel.sock' });
  t.deepEqual(parseQemuSocketAddress('127.0.0.1:5555'), { type: 'inet', host: '127.0.0.1', port: 5555 });
  t.deepEqual(parseQemuSocketAddress('tcp:[::1]:80'), { type: 'inet', host: '::1', port: 80 });
  t.throws(() => parseQemuSocketAddress('nonsense'), { message: /not a socket address/ });
  t.deepEqual(qemuStreamArgs({ type: 'unix', path: '/s' }, { model: 'rtl8139' }), [
    '-netdev',
    'stream,id=usernet0,server=off,addr.type=unix,addr.path=/s',
    '-device',
    'rtl8139,netdev=usernet0',
  ]);
});

nativeTest('stream server: frames in one write arrive as one batch; partial frames are reassembled', async (t) => {
  const d = dir();
  const meter = new Meter();
  const server = await listenQemuStream({ address: { type: 'unix', path: join(d, 's') }, meter });
  t.teardown(async () => {
    await server.close();
    rmSync(d, { recursive: true, force: true });
  });
  const guest = nextGuest(server);
  const client = net.connect(join(d, 's'));
  const port = await guest;
  const batches: Uint8Array[][] = [];
  port.onReceive((frames) => batches.push(frames.map((f) => f.data.slice())));
  const sent = [frame(60, 1), frame(1514, 2), frame(100, 3)];
  client.write(encode(sent));
  await until(() => batches.flat().length === 3, 'three frames');
  t.is(batches.length, 1, 'one read, one batch');
  t.deepEqual(batches[0], sent);
  // a frame dribbled byte by byte
  const big = frame(3000, 4);
  const bytes = encode([big]);
  for (let i = 0; i < bytes.length; i += 700) {
    client.write(bytes.subarray(i, i + 700));
    await new Promise((r) => setImmediate(r));
  }
  await until(() => batches.flat().length === 4, 'the dribbled frame');
  t.deepEqual(batches.flat()[3], big);
  t.is(meter.stage('qemu.stream.read').frames, 4);
  client.destroy();
  await new Promise((r) => port.once('close', r));
});

nativeTest('stream: send() writes length-prefixed frames; a slow reader gets every accepted frame intact, the rest counted', async (t) => {
  const d = dir();
  const meter = new Meter();
  const server = await listenQemuStream({ address: { type: 'unix', path: join(d, 's') }, meter, backlogBytes: 256 << 10 });
  t.teardown(async () => {
    await server.close();
    rmSync(d, { recursive: true, force: true });
  });
  const guest = nextGuest(server);
  const client = net.connect(join(d, 's'));
  const port = await guest;
  client.pause(); // do not read: the socket fills
  const dec = new Decoder();
  const total = 400;
  for (let i = 0; i < total; i += 20) {
    const batch: Frame[] = [];
    for (let j = 0; j < 20; j++) batch.push(plainFrame(frame(9000, i + j)));
    port.send(batch);
  }
  const out = meter.stage('qemu.stream.write');
  t.true(out.drops > 0, 'some frames did not fit the socket and the backlog');
  t.true(port.rxBlocked, 'frames wait: a tap behind it may stop reading (RxBackpressure)');
  let unblocked = 0;
  port.on('rx-unblocked', () => unblocked++);
  client.on('data', (c: Buffer) => dec.push(c));
  client.resume();
  await until(() => dec.frames.length === total - out.drops, 'the accepted frames');
  t.false(port.rxBlocked);
  t.is(unblocked, 1);
  // frames arrive in order and uncorrupted; the dropped ones are simply missing
  let seed = 0;
  for (const f of dec.frames) {
    while (seed < total && !Buffer.from(frame(9000, seed)).equals(f)) seed++;
    t.true(seed < total, 'every received frame is one that was sent, in order');
    seed++;
  }
  client.destroy();
});

nativeTest('stream: an absurd length closes that connection only; the server accepts the next', async (t) => {
  const d = dir();
  const server = await listenQemuStream({ address: { type: 'unix', path: join(d, 's') }, meter: new Meter() });
  t.teardown(async () => {
    await server.close();
    rmSync(d, { recursive: true, force: true });
  });
  let guest = nextGuest(server);
  const c1 = net.connect(join(d, 's'));
  const p1 = await guest;
  const closed = new Promise<string>((r) => p1.once('close', r));
  const bad = Buffer.alloc(8);
  bad.writeUInt32BE(1 << 30);
  c1.write(bad);
  t.regex(await closed, /bad input: frame length 1073741824/);
  guest = nextGuest(server);
  const c2 = net.connect(join(d, 's'));
  const p2 = await guest;
  const got: Uint8Array[] = [];
  p2.onReceive((fs) => got.push(...fs.map((f) => f.data.slice())));
  c2.write(encode([frame(64, 9)]));
  await until(() => got.length === 1, 'a frame on the new connection');
  c1.destroy();
  c2.destroy();
});

nativeTest('stream: a second connection is refused while one is active; EOF mid-frame is a short read', async (t) => {
  const d = dir();
  const server = await listenQemuStream({ address: { type: 'unix', path: join(d, 's') }, meter: new Meter() });
  t.teardown(async () => {
    await server.close();
    rmSync(d, { recursive: true, force: true });
  });
  const guest = nextGuest(server);
  const c1 = net.connect(join(d, 's'));
  const p1 = await guest;
  const c2 = net.connect(join(d, 's'));
  await new Promise((r) => c2.once('close', r));
  t.is(server.ports.size, 1);
  const closed = new Promise<string>((r) => p1.once('close', r));
  c1.end(encode([frame(100, 1)]).subarray(0, 50));
  t.regex(await closed, /short read/);
});

nativeTest('stream over TCP, both sides: usernet listening, and usernet connecting', async (t) => {
  const meter = new Meter();
  const server = await listenQemuStream({ address: { type: 'inet', host: '127.0.0.1', port: 0 }, meter });
  t.teardown(() => server.close());
  t.true(server.address.type === 'inet' && server.address.port > 0);
  const guest = nextGuest(server);
  const addr = server.address as { port: number };
  const client = net.connect(addr.port, '127.0.0.1');
  const port = await guest;
  const dec = new Decoder();
  client.on('data', (c: Buffer) => dec.push(c));
  port.send([plainFrame(frame(1000, 5))]);
  await until(() => dec.frames.length === 1, 'frame over TCP');
  t.deepEqual(new Uint8Array(dec.frames[0]), frame(1000, 5));
  client.destroy();

  // usernet as the client of a listening peer (QEMU server=on)
  const peer = net.createServer();
  await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
  t.teardown(() => peer.close());
  const accepted = new Promise<net.Socket>((r) => peer.once('connection', r));
  const cport = await connectQemuStream({ type: 'inet', host: '127.0.0.1', port: (peer.address() as net.AddressInfo).port }, { meter });
  const sock = await accepted;
  const got: Uint8Array[] = [];
  cport.onReceive((fs) => got.push(...fs.map((f) => f.data.slice())));
  sock.write(encode([frame(70, 1), frame(80, 2)]));
  await until(() => got.length === 2, 'frames from the peer');
  await cport.close();
  sock.destroy();
  await t.throwsAsync(connectQemuStream({ type: 'inet', host: '127.0.0.1', port: 1 }, { meter }), { message: /connect .* failed/ });
});

nativeTest('dgram: one frame per datagram, peer learnt from the first datagram', async (t) => {
  const d = dir();
  const meter = new Meter();
  const port = new QemuDgramPort({ path: join(d, 'usernet.sock'), meter });
  const peer = unixDgram({ bind: join(d, 'qemu.sock') });
  t.teardown(async () => {
    await port.close();
    peer.close();
    rmSync(d, { recursive: true, force: true });
  });
  const got: Uint8Array[] = [];
  port.onReceive((fs) => got.push(...fs.map((f) => f.data.slice())));
  port.send([plainFrame(frame(60, 0))]);
  t.is(meter.stage('qemu.dgram.write').dropReasons.get('no-peer-yet'), 1);
  for (let i = 1; i <= 5; i++) unixSendTo(peer, frame(100 * i, i), join(d, 'usernet.sock'));
  await until(() => got.length === 5, 'five datagrams');
  t.is(port.peer, join(d, 'qemu.sock'));
  t.deepEqual(got[4], frame(500, 5));
  port.send([plainFrame(frame(1500, 7)), plainFrame(frame(64, 8))]);
  const buf = new Uint8Array(70000);
  const received: Uint8Array[] = [];
  await new Promise<void>((resolve) => {
    const w = new FdWatcher(peer, () => {
      for (let m = unixRecvFrom(peer, buf); m; m = unixRecvFrom(peer, buf)) received.push(buf.slice(0, m.bytes));
      if (received.length === 2) {
        w.close();
        resolve();
      }
    });
    w.start(POLL_READABLE);
  });
  t.deepEqual(received, [frame(1500, 7), frame(64, 8)]);
});

const qemuTest = addonLoadError || missing('qemu') ? test.skip : test;

qemuTest('a real QEMU 7.2 connects to the stream server (-netdev stream, rtl8139)', async (t) => {
  const d = dir();
  const server = await listenQemuStream({ address: { type: 'unix', path: join(d, 's') }, meter: new Meter() });
  const guest = nextGuest(server);
  const qemu = spawn(
    'qemu-system-x86_64',
    ['-nodefaults', '-display', 'none', '-S', '-accel', 'tcg', ...qemuStreamArgs(server.address, { model: 'rtl8139' })],
    { stdio: 'ignore' },
  );
  t.teardown(async () => {
    qemu.kill('SIGKILL');
    await server.close();
    rmSync(d, { recursive: true, force: true });
  });
  const port = await guest;
  t.false(port.isClosed);
  const closed = new Promise((r) => port.once('close', r));
  qemu.kill('SIGTERM');
  await closed;
  t.is(server.ports.size, 0);
});
