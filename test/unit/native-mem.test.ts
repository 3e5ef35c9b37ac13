/**
 * mmap/munmap, memfd and eventfd against the kernel: two mappings of one memfd see each other's
 * writes (as guest RAM shared with QEMU does), offsets, munmap detaches every view, bad offsets
 * are EINVAL; eventfd counting, semaphore mode, overflow as `false`.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import * as native from '../../src/native';

const mappingsOf = (fd: native.OwnedFd): number =>
  readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:usernet-map-${fd.fd} `)).length;

test('two mappings of one memfd share bytes; offsets are page granular', (t) => {
  const page = native.pageSize();
  t.true(page >= 4096);
  const fd = native.memfdCreate(`usernet-map-0`, 4 * page);
  const a = native.mmap(fd, 0, 4 * page);
  const b = native.mmap(fd, page, 2 * page);
  t.is(a.byteLength, 4 * page);
  t.is(b.byteLength, 2 * page);
  const va = new Uint8Array(a);
  const vb = new Uint8Array(b);
  va[page + 5] = 0xab;
  t.is(vb[5], 0xab);
  vb[page] = 0xcd;
  t.is(va[2 * page], 0xcd);
  // atomics work on the shared memory (ring indices are published this way)
  const i32 = new Int32Array(a);
  Atomics.store(i32, 0, 42);
  t.is(new DataView(a).getInt32(0, true), 42);
  t.throws(() => native.mmap(fd, 1, page), { code: 'EINVAL' });
  t.throws(() => native.mmap(fd, 0, 0), { instanceOf: RangeError });
  native.munmap(a);
  native.munmap(b);
  fd.close();
});

test('munmap unmaps now and detaches every view; a second munmap throws', (t) => {
  const fd = native.memfdCreate('usernet-map-x', 65536);
  const ab = native.mmap(fd, 0, 65536);
  const view = new Uint8Array(ab, 100, 10);
  view[0] = 1;
  const before = native.nativeStats();
  native.munmap(ab);
  t.is(ab.byteLength, 0);
  t.is(view.length, 0);
  t.is(view[0] as number | undefined, undefined, 'reading a detached view is harmless');
  t.is(native.nativeStats().mappings, before.mappings - 1);
  t.throws(() => native.munmap(ab), { code: 'EINVAL' });
  t.throws(() => native.munmap(new ArrayBuffer(4)), { instanceOf: TypeError });
  fd.close();
});

test('a mapping longer than buffer.constants.MAX_LENGTH throws cleanly; chunks of it work', (t) => {
  const max = native.maxMappingLength();
  const fd = native.memfdCreate('usernet-big', max + 2 * 65536); // sparse: no memory is used
  const before = native.nativeStats();
  t.throws(() => native.mmap(fd, 0, max + 65536), { code: 'ERR_BUFFER_TOO_LARGE' });
  t.deepEqual(native.nativeStats(), before, 'nothing stays mapped');
  const tail = native.mmap(fd, max, 65536);
  new Uint8Array(tail)[0] = 9;
  native.munmap(tail);
  fd.close();
});

test('the mapping is visible in /proc/self/maps until munmap', (t) => {
  const fd = native.memfdCreate('usernet-map-probe', 8192);
  const name = `usernet-map-${fd.fd}`;
  fd.close();
  const mfd = native.memfdCreate(name, 8192);
  const count = () => mappingsOf(mfd);
  const before = count();
  const ab = native.mmap(mfd, 0, 8192);
  t.is(count(), before + 1);
  native.munmap(ab);
  t.is(count(), before);
  mfd.close();
});

test('eventfd counts, resets on read, semaphore mode reads 1, overflow returns false', (t) => {
  const e = native.eventfdCreate();
  t.is(native.eventfdRead(e), 0);
  t.true(native.eventfdWrite(e));
  t.true(native.eventfdWrite(e, 41));
  t.is(native.eventfdRead(e), 42);
  t.is(native.eventfdRead(e), 0);
  // 2^53 - 1 at most per write from JS; the counter max is 2^64 - 2, so fill it in steps
  t.true(native.eventfdWrite(e, Number.MAX_SAFE_INTEGER));
  t.throws(() => native.eventfdWrite(e, Number.MAX_SAFE_INTEGER + 1), { instanceOf: RangeError });
  e.close();

  const s = native.eventfdCreate(3, true);
  t.is(native.eventfdRead(s), 1);
  t.is(native.eventfdRead(s), 1);
  t.is(native.eventfdRead(s), 1);
  t.is(native.eventfdRead(s), 0);
  s.close();

  const full = native.eventfdCreate(0xffffffff);
  let writes = 0;
  while (native.eventfdWrite(full, Number.MAX_SAFE_INTEGER)) writes++;
  t.true(writes > 0 && writes < 4096, 'the counter filled up and the write reported would-block');
  full.close();
});
