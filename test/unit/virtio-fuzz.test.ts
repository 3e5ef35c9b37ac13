/**
 * A hostile driver: descriptor tables, available rings and indirect tables full of random
 * bytes. Whatever the guest writes, the device must not throw; it either processes chains or
 * puts the queue into NEEDS_RESET (and says why).
 */
import test from 'ava';
import fc from 'fast-check';
import { GuestMemory } from '../../src/devices/memory';
import { DEFAULT_NET_FEATURES, RX_QUEUE, TX_QUEUE, VirtioNetDevice } from '../../src/devices/virtio/net-device';
import { VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../src/devices/virtio/features';
import { plainFrame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { AVAIL, BUFFERS, DESC, TestDriver } from './virtio-driver';

const Q = 16;

test('random rings never make the device throw', (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 16 * Q, maxLength: 16 * Q }),
      fc.uint8Array({ minLength: 6 + 2 * Q, maxLength: 6 + 2 * Q }),
      fc.array(fc.record({ desc: fc.nat(Q - 1), addr: fc.nat(0x60000), len: fc.nat(0x5000), flags: fc.nat(7), next: fc.nat(Q + 2) }), { maxLength: 24 }),
      fc.boolean(),
      fc.boolean(),
      fc.nat(4),
      (descBytes, availBytes, sane, indirect, eventIdx, frames) => {
        const meter = new Meter();
        const memory = GuestMemory.plain(1 << 20, meter);
        const rx = new TestDriver(Q, { memory, base: 0 });
        const tx = new TestDriver(Q, { memory, base: 0x80000 });
        let features = DEFAULT_NET_FEATURES;
        if (!indirect) features &= ~bit(VIRTIO_RING_F_INDIRECT_DESC);
        if (!eventIdx) features &= ~bit(VIRTIO_RING_F_EVENT_IDX);
        const dev = new VirtioNetDevice({ memory, meter });
        dev.setDriverFeatures(features);
        const reasons: string[] = [];
        dev.on('needs-reset', (_q: number, r: string) => reasons.push(r));
        for (const [i, d] of [
          [RX_QUEUE, rx],
          [TX_QUEUE, tx],
        ] as const) {
          // random tables, with some plausible descriptors mixed in
          memory.copyIn('gpa', d.base + DESC, descBytes);
          memory.copyIn('gpa', d.base + AVAIL, availBytes);
          for (const s of sane) d.writeDesc(d.base + DESC, s.desc, d.base + BUFFERS + s.addr, s.len, s.flags, s.next);
          const q = dev.queue(i)!;
          q.setSize(Q);
          q.setAddresses(d.ring);
          q.setBase(0);
          q.enabled = true;
          dev.startQueue(i);
        }
        dev.onReceive(() => {});
        t.notThrows(() => {
          dev.kick(TX_QUEUE);
          dev.send(Array.from({ length: frames }, (_, k) => plainFrame(new Uint8Array(60 + 700 * k))));
          dev.kick(RX_QUEUE);
        });
        for (const q of [dev.rx, dev.tx]) if (q.error) t.true(reasons.includes(q.error));
      },
    ),
    { numRuns: 400, seed: 4242 },
  );
});
