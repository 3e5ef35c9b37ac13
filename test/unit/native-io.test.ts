/**
 * Plain and batched I/O against real kernel sockets (AF_UNIX socketpairs): byte counts, -1 on
 * would-block, frames with 1–3 parts per writev, lengths in the caller's Int32Array, the status
 * array at EAGAIN and on errors.
 */
import test from 'ava';
import * as native from '../../src/native';

const EAGAIN = native.Errno.EAGAIN;

test('read/write/readv/writev move bytes and return -1 when they would block', (t) => {
  const [a, b] = native.unixSocketPair();
  const buf = new Uint8Array(64);
  t.is(native.read(b, buf), -1);
  t.is(native.write(a, Buffer.from('hello')), 5);
  t.is(native.read(b, buf), 5);
  t.is(Buffer.from(buf.subarray(0, 5)).toString(), 'hello');

  t.is(native.writev(a, [Buffer.from('ab'), new Uint8Array(0), Buffer.from('cde')]), 5);
  const p1 = new Uint8Array(2);
  const p2 = new Uint8Array(10);
  t.is(native.readv(b, [p1, p2]), 5);
  t.is(Buffer.from(p1).toString(), 'ab');
  t.is(Buffer.from(p2.subarray(0, 3)).toString(), 'cde');

  // a DataView and a Uint16Array are byte views too
  t.is(native.write(a, new DataView(new ArrayBuffer(4))), 4);
  t.is(native.read(b, new Uint16Array(8)), 4);

  a.close();
  t.is(native.read(b, buf), 0, 'end of stream');
  b.close();
});

test('writeFrames sends 1–3 part frames with one writev each; readFrames fills slots and lengths', (t) => {
  const [a, b] = native.unixSocketPair(native.SOCK_DGRAM);
  const header = new Uint8Array([1, 2, 3, 4]);
  const frames = [
    [header, Buffer.from('first'), null],
    [Buffer.from('second-alone'), null, null],
    [header, Buffer.from('th'), Buffer.from('ird')],
    [null, new Uint8Array(0), null], // empty: skipped, counted as written
  ];
  const parts = frames.flat();
  const status = new Int32Array(2);
  t.is(native.writeFrames(a, parts, 3, frames.length, status), 4);
  t.deepEqual([...status], [0, 0]);

  const slab = new native.FrameSlab(8, 64);
  t.is(slab.read(b), 3);
  t.is(slab.status[0], EAGAIN, 'stopped because the socket was drained');
  t.deepEqual([...slab.lengths.subarray(0, 3)], [9, 12, 9]);
  t.deepEqual([...slab.frame(0).subarray(0, 4)], [1, 2, 3, 4]);
  t.is(Buffer.from(slab.frame(0).subarray(4)).toString(), 'first');
  t.is(Buffer.from(slab.frame(1)).toString(), 'second-alone');
  t.is(Buffer.from(slab.frame(2).subarray(4)).toString(), 'third');
  t.is(slab.read(b), 0);

  // maxFrames and the capacity of slab/lengths bound the batch
  native.writeFrames(a, [Buffer.from('x'), Buffer.from('y'), Buffer.from('z')], 1, 3);
  const lengths = new Int32Array(2);
  const raw = new Uint8Array(16);
  t.is(native.readFrames(b, raw, 8, 10, lengths), 2);
  t.is(native.readFrames(b, raw, 8, 1, lengths, status), 1);
  t.is(status[0], 0, 'stopped at maxFrames');
  t.is(native.readFrames(b, raw, 8, 10, lengths, status), 0);
  t.is(status[0], EAGAIN);
  a.close();
  b.close();
});

test('writeFrames stops at EAGAIN and reports it; a truncating slot cuts the frame', (t) => {
  const [a, b] = native.unixSocketPair(native.SOCK_DGRAM);
  const frame = new Uint8Array(1000);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 10_000; i++) parts.push(frame);
  const status = new Int32Array(2);
  const sent = native.writeFrames(a, parts, 1, parts.length, status);
  t.true(sent > 0 && sent < parts.length, `sent ${sent}`);
  t.is(status[0], EAGAIN);
  t.is(status[1], 0);
  // without status: no throw at EAGAIN either
  t.is(native.writeFrames(a, parts, 1, 5), 0);

  const small = new native.FrameSlab(4, 100);
  t.is(small.read(b, 1), 1);
  t.is(small.lengths[0], 100, 'datagram cut at the slot size');
  a.close();
  b.close();
});

test('errors: with status they are reported, without status the first failing frame throws', (t) => {
  const [a, b] = native.unixSocketPair(native.SOCK_DGRAM);
  b.close();
  const status = new Int32Array(2);
  t.is(native.writeFrames(a, [Buffer.from('x')], 1, 1, status), 0);
  t.is(native.errnoName(status[0]), 'ECONNREFUSED');
  // the kernel disconnected the socket after that refusal
  t.throws(() => native.writeFrames(a, [Buffer.from('x')], 1, 1), { code: 'ENOTCONN' });
  a.close();
  const [e, f] = native.unixSocketPair(native.SOCK_DGRAM);
  f.close();
  t.throws(() => native.writeFrames(e, [Buffer.from('x')], 1, 1), { code: 'ECONNREFUSED' });
  e.close();
  const [c, d] = native.unixSocketPair();
  d.close();
  t.throws(() => native.write(c, Buffer.from('x')), { code: 'EPIPE' }); // no SIGPIPE kills us
  c.close();
});
