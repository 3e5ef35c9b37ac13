/**
 * The vhost-user back-end against a test front-end over a real unix socket: messages with
 * SCM_RIGHTS (a memfd as guest RAM, eventfds for kick/call/err), rings driven by the test
 * driver in the shared memory, and bad input of every kind.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory, makeRegion } from '../../src/devices/memory';
import { DEFAULT_NET_FEATURES, type VirtioNetDevice } from '../../src/devices/virtio/net-device';
import { VHOST_USER_F_PROTOCOL_FEATURES, bit } from '../../src/devices/virtio/features';
import { plainFrame, type Frame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import {
  FdWatcher,
  POLL_READABLE,
  addonLoadError,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  memfdCreate,
  mmap,
  nativeStats,
  recvmsg,
  sendmsg,
  unixConnect,
  type OwnedFd,
} from '../../src/native';
import { PROTOCOL_F_REPLY_ACK, Req } from '../../src/transports/vhost-user-protocol';
import { VhostUserServer, listenVhostUser } from '../../src/transports/vhost-user';
import { TestDriver } from './virtio-driver';

const nativeTest = addonLoadError ? test.skip : test;
// counts process-wide mappings: must not overlap other tests
const serialTest = addonLoadError ? test.skip : test.serial;

const MEM = 4 << 20;
const UADDR = 0x7f1234000000;

interface Reply {
  request: number;
  flags: number;
  payload: DataView;
}

/** What QEMU does, by hand. */
class FrontEnd {
  readonly sock: OwnedFd;
  private buf = new Uint8Array(0);
  private waiters: Array<() => void> = [];
  private readonly watcher: FdWatcher;
  closed = false;

  constructor(path: string) {
    this.sock = unixConnect(path);
    const chunk = new Uint8Array(4096);
    this.watcher = new FdWatcher(this.sock, () => {
      for (;;) {
        const m = recvmsg(this.sock, chunk);
        if (m === null) break;
        if (m.bytes === 0) {
          this.closed = true;
          this.watcher.stop();
          break;
        }
        const next = new Uint8Array(this.buf.length + m.bytes);
        next.set(this.buf);
        next.set(chunk.subarray(0, m.bytes), this.buf.length);
        this.buf = next;
      }
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    this.watcher.start(POLL_READABLE);
  }

  send(request: number, payload: Uint8Array = new Uint8Array(0), fds: OwnedFd[] = [], needReply = false): void {
    const msg = new Uint8Array(12 + payload.length);
    const v = new DataView(msg.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, 1 | (needReply ? 8 : 0), true);
    v.setUint32(8, payload.length, true);
    msg.set(payload, 12);
    if (sendmsg(this.sock, msg, fds) !== msg.length) throw new Error('short send');
  }

  async reply(): Promise<Reply> {
    for (;;) {
      if (this.buf.length >= 12) {
        const v = new DataView(this.buf.buffer, this.buf.byteOffset);
        const size = v.getUint32(8, true);
        if (this.buf.length >= 12 + size) {
          const r = { request: v.getUint32(0, true), flags: v.getUint32(4, true), payload: new DataView(this.buf.slice(12, 12 + size).buffer) };
          this.buf = this.buf.slice(12 + size);
          return r;
        }
      }
      if (this.closed) throw new Error('back-end closed the connection');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  async call(request: number, payload?: Uint8Array, fds?: OwnedFd[], needReply = false): Promise<Reply> {
    this.send(request, payload, fds, needReply);
    return this.reply();
  }

  async waitClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }

  close(): void {
    this.watcher.close();
    this.sock.close();
  }
}

const u64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
const state = (index: number, num: number) => {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
};

/** Full QEMU-like bring-up; returns the front-end, its view of guest memory and the rings. */
async function bringUp(t: { is: (a: unknown, b: unknown, m?: string) => void; teardown: (f: () => void) => void }, path: string, features = DEFAULT_NET_FEATURES) {
  const fe = new FrontEnd(path);
  t.teardown(() => fe.close());
  const f = await fe.call(Req.GET_FEATURES);
  t.is(f.flags, 5, 'replies carry flags 0x5');
  const offered = f.payload.getBigUint64(0, true);
  t.is(offered & bit(VHOST_USER_F_PROTOCOL_FEATURES), bit(VHOST_USER_F_PROTOCOL_FEATURES));
  const pf = (await fe.call(Req.GET_PROTOCOL_FEATURES)).payload.getBigUint64(0, true);
  t.is(pf, bit(PROTOCOL_F_REPLY_ACK), 'REPLY_ACK only: no MQ, no CONFIG');
  fe.send(Req.SET_PROTOCOL_FEATURES, u64(pf));
  fe.send(Req.SET_OWNER);
  const ack = await fe.call(Req.SET_FEATURES, u64((features & offered) | bit(VHOST_USER_F_PROTOCOL_FEATURES)), [], true);
  t.is(ack.payload.getBigUint64(0, true), 0n);
  // guest RAM: a memfd both sides map
  const memfd = memfdCreate('guest-ram', MEM);
  const ab = mmap(memfd, 0, MEM);
  const memory = new GuestMemory([makeRegion({ gpa: 0, size: MEM, uaddr: UADDR, mmapOffset: 0 }, ab)], new Meter());
  const table = new Uint8Array(8 + 32);
  const tv = new DataView(table.buffer);
  tv.setUint32(0, 1, true);
  tv.setBigUint64(8, 0n, true);
  tv.setBigUint64(16, BigInt(MEM), true);
  tv.setBigUint64(24, BigInt(UADDR), true);
  tv.setBigUint64(32, 0n, true);
  t.is((await fe.call(Req.SET_MEM_TABLE, table, [memfd], true)).payload.getBigUint64(0, true), 0n);
  memfd.close();
  const rx = new TestDriver(256, { memory, base: 0 });
  const tx = new TestDriver(256, { memory, base: 0x200000 });
  const kicks: OwnedFd[] = [];
  const calls: OwnedFd[] = [];
  const errs: OwnedFd[] = [];
  for (const [i, d] of [
    [0, rx],
    [1, tx],
  ] as const) {
    const call = eventfdCreate();
    const err = eventfdCreate();
    const kick = eventfdCreate();
    fe.send(Req.SET_VRING_CALL, u64(BigInt(i)), [call]);
    fe.send(Req.SET_VRING_ERR, u64(BigInt(i)), [err]);
    fe.send(Req.SET_VRING_NUM, state(i, 256));
    fe.send(Req.SET_VRING_BASE, state(i, 0));
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setUint32(0, i, true);
    av.setBigUint64(8, BigInt(UADDR + d.ring.desc), true);
    av.setBigUint64(16, BigInt(UADDR + d.ring.used), true);
    av.setBigUint64(24, BigInt(UADDR + d.ring.avail), true);
    fe.send(Req.SET_VRING_ADDR, addr);
    t.is((await fe.call(Req.SET_VRING_KICK, u64(BigInt(i)), [kick], true)).payload.getBigUint64(0, true), 0n, `kick ${i}`);
    t.is((await fe.call(Req.SET_VRING_ENABLE, state(i, 1), [], true)).payload.getBigUint64(0, true), 0n, `enable ${i}`);
    kicks.push(kick);
    calls.push(call);
    errs.push(err);
  }
  return { fe, memory, rx, tx, kicks, calls, errs };
}

function until(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (cond()) resolve();
      else if (Date.now() - started > ms) reject(new Error(`gave up waiting for ${what}`));
      else setTimeout(tick, 2);
    };
    tick();
  });
}

async function server(t: { teardown: (f: () => Promise<void>) => void }, name = 's'): Promise<{ server: VhostUserServer; path: string }> {
  const d = mkdtempSync(join(tmpdir(), 'usernet-vu-'));
  const path = join(d, name);
  const s = await listenVhostUser({ path, meter: new Meter() });
  t.teardown(async () => {
    await s.close();
    rmSync(d, { recursive: true, force: true });
  });
  return { server: s, path };
}

const hdr12 = new Uint8Array(12);
const frameOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 5 + seed) & 0xff);

nativeTest('negotiation, memory table over SCM_RIGHTS, and frames both ways through eventfds', async (t) => {
  const { server: s, path } = await server(t);
  const announced = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  const { rx, tx, kicks, calls } = await bringUp(t, path);
  const port = await announced;
  t.true(port.offloads.guestTso4);
  t.is(s.guest, port);
  const got: Uint8Array[] = [];
  port.onReceive((fs: readonly Frame[]) => got.push(...fs.map((f) => f.data.slice())));

  // TX: the guest posts two frames and kicks
  tx.addChain([{ data: hdr12 }, { data: frameOf(1000, 1) }], { hold: true });
  tx.addChain([{ data: hdr12 }, { data: frameOf(64, 2) }], { hold: true });
  tx.publish();
  eventfdWrite(kicks[1], 1);
  await until(() => got.length === 2, 'two TX frames');
  t.deepEqual(got, [frameOf(1000, 1), frameOf(64, 2)]);
  await until(() => eventfdRead(calls[1]) > 0, 'TX completion interrupt');
  t.is(tx.usedIdx, 2);

  // RX: buffers posted, a frame sent to the port lands in them with an interrupt
  for (let i = 0; i < 4; i++) rx.addChain([{ len: 2048, write: true }]);
  eventfdWrite(kicks[0], 1);
  port.send([plainFrame(frameOf(300, 3))]);
  t.true(eventfdRead(calls[0]) > 0, 'RX interrupt written synchronously');
  const [u] = rx.takeUsed();
  t.is(u.len, 312);
});

nativeTest('GET_VRING_BASE stops the ring and answers the next avail index; restart from it', async (t) => {
  const { server: s, path } = await server(t);
  const announced = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  const { fe, tx, kicks } = await bringUp(t, path);
  const port = await announced;
  const got: number[] = [];
  port.onReceive((fs) => got.push(fs.length));
  for (let i = 0; i < 3; i++) tx.addChain([{ data: hdr12 }, { data: frameOf(80, i) }]);
  eventfdWrite(kicks[1], 1);
  await until(() => got.reduce((a, b) => a + b, 0) === 3, 'three frames');
  const r = await fe.call(Req.GET_VRING_BASE, state(1, 0));
  t.is(r.request, Req.GET_VRING_BASE);
  t.is(r.payload.getUint32(0, true), 1);
  t.is(r.payload.getUint32(4, true), 3);
  t.false(port.tx.started);
  // stopped: a posted chain is not consumed even when processing is asked for
  tx.addChain([{ data: hdr12 }, { data: frameOf(80, 9) }]);
  port.kick(1);
  t.is(tx.usedIdx, 3);
  // restart at the returned base with a fresh kick fd
  fe.send(Req.SET_VRING_BASE, state(1, 3));
  const kick = eventfdCreate();
  t.teardown(() => kick.close());
  t.is((await fe.call(Req.SET_VRING_KICK, u64(1n), [kick], true)).payload.getBigUint64(0, true), 0n);
  await until(() => tx.usedIdx === 4, 'the chain posted while stopped');
});

nativeTest('unknown messages, bad payloads and refused features get a failure ack; the connection lives on', async (t) => {
  const { server: s, path } = await server(t);
  const { fe } = await bringUp(t, path);
  t.is((await fe.call(99, new Uint8Array(8), [], true)).payload.getBigUint64(0, true), 1n, 'unknown id');
  t.is((await fe.call(Req.SET_LOG_BASE, new Uint8Array(16), [], true)).payload.getBigUint64(0, true), 1n, 'no dirty logging');
  t.is((await fe.call(Req.SET_VRING_NUM, state(0, 300), [], true)).payload.getBigUint64(0, true), 1n, 'queue size not a power of 2');
  t.is((await fe.call(Req.SET_VRING_NUM, state(7, 256), [], true)).payload.getBigUint64(0, true), 1n, 'no queue 7');
  const table = new Uint8Array(40);
  new DataView(table.buffer).setUint32(0, 1, true);
  t.is((await fe.call(Req.SET_MEM_TABLE, table, [], true)).payload.getBigUint64(0, true), 1n, 'region without fd');
  const bad = await fe.call(Req.GET_VRING_BASE, state(5, 0));
  t.is(bad.payload.byteLength, 8, 'a GET always gets its reply');
  const q = await fe.call(Req.GET_QUEUE_NUM);
  t.is(q.payload.getBigUint64(0, true), 1n);
  const cfgReq = new Uint8Array(12 + 6);
  new DataView(cfgReq.buffer).setUint32(4, 6, true);
  const cfg = await fe.call(Req.GET_CONFIG, cfgReq);
  t.deepEqual(new Uint8Array(cfg.payload.buffer, 12, 6), Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]), 'MAC from the config space');
  t.false(fe.closed);
  t.truthy(s.connection && !s.connection.closed);
});

nativeTest('garbage and short reads close that connection only; the server takes the next (reconnect)', async (t) => {
  const { server: s, path } = await server(t);
  // a header with the REPLY flag set is not a request
  const a = new FrontEnd(path);
  t.teardown(() => a.close());
  const msg = new Uint8Array(12);
  new DataView(msg.buffer).setUint32(4, 0x5, true);
  sendmsg(a.sock, msg);
  await a.waitClosed();
  // a payload size over the limit
  const b = new FrontEnd(path);
  t.teardown(() => b.close());
  const big = new Uint8Array(12);
  const bv = new DataView(big.buffer);
  bv.setUint32(0, Req.SET_MEM_TABLE, true);
  bv.setUint32(4, 1, true);
  bv.setUint32(8, 1 << 20, true);
  sendmsg(b.sock, big);
  await b.waitClosed();
  // a short read: half a header, then EOF
  const c = new FrontEnd(path);
  sendmsg(c.sock, new Uint8Array(6));
  c.close();
  await until(() => s.connection === null || s.connection.closed, 'the short read noticed');
  // and a proper front-end after all that
  const announced = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  await bringUp(t, path);
  t.truthy(await announced);
});

serialTest('a front-end going away closes its port and unmaps memory; a new one gets a fresh device', async (t) => {
  const { server: s, path } = await server(t);
  const first = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  const up = await bringUp(t, path);
  const port1 = await first;
  const mappedBefore = nativeStats().mappings;
  const closed = new Promise((r) => port1.once('close', r));
  const gone = new Promise((r) => s.once('disconnect', r));
  up.fe.close();
  await closed;
  await gone;
  t.true(port1.isClosed);
  t.is(nativeStats().mappings, mappedBefore - 1, 'the back-end unmapped its view of guest RAM');
  const second = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  await bringUp(t, path);
  const port2 = await second;
  t.not(port2, port1);
  t.false(port2.isClosed);
});

nativeTest('a second front-end is refused while one is connected', async (t) => {
  const { server: s, path } = await server(t);
  await bringUp(t, path);
  const intruder = new FrontEnd(path);
  t.teardown(() => intruder.close());
  await intruder.waitClosed();
  t.truthy(s.connection && !s.connection.closed);
});

nativeTest('a bad descriptor from the guest signals the err eventfd (NEEDS_RESET), other VMs are unaffected', async (t) => {
  const one = await server(t, 'a');
  const two = await server(t, 'b');
  const g1 = new Promise<VirtioNetDevice>((r) => one.server.once('guest', r));
  const g2 = new Promise<VirtioNetDevice>((r) => two.server.once('guest', r));
  const vm1 = await bringUp(t, one.path);
  const vm2 = await bringUp(t, two.path);
  const [p1, p2] = await Promise.all([g1, g2]);
  const got2: number[] = [];
  p2.onReceive((fs) => got2.push(fs.length));
  vm1.tx.addChain([{ addr: 0x7fff0000, len: 100 }]);
  eventfdWrite(vm1.kicks[1], 1);
  await until(() => eventfdRead(vm1.errs[1]) > 0, 'the err eventfd');
  t.truthy(p1.status & 0x40);
  vm2.tx.addChain([{ data: hdr12 }, { data: frameOf(100, 1) }]);
  eventfdWrite(vm2.kicks[1], 1);
  await until(() => got2.length === 1, 'the other VM still works');
  t.false(vm1.fe.closed, 'the connection stays; QEMU decides what to do');
});

nativeTest('random well-framed messages never crash the back-end; it still serves a proper front-end', async (t) => {
  const { server: s, path } = await server(t);
  const fe = new FrontEnd(path);
  t.teardown(() => fe.close());
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let i = 0; i < 300; i++) {
    const req = 1 + rand(45);
    if (req === Req.SET_OWNER || req === Req.RESET_OWNER) continue;
    const payload = Uint8Array.from({ length: rand(48) }, () => rand(256));
    try {
      fe.send(req, payload, [], rand(2) === 1);
    } catch {
      break; // the back-end dropped the connection (bad input): allowed
    }
    if (i % 8 === 0) await new Promise((r) => setTimeout(r, 1)); // let it read and answer
  }
  // a round trip proves the connection still answers (or was dropped cleanly for bad input)
  try {
    fe.send(Req.GET_QUEUE_NUM);
    for (;;) {
      const r = await fe.reply();
      if (r.request === Req.GET_QUEUE_NUM) break;
    }
  } catch {
    t.true(fe.closed, 'if it did not answer, the back-end closed the connection');
  }
  fe.close();
  const announced = new Promise<VirtioNetDevice>((r) => s.once('guest', r));
  await bringUp(t, path);
  t.truthy(await announced);
});
