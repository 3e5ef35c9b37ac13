/**
 * RTL8139 building blocks on their own: the 93C46 EEPROM's Microwire commands (read, sequential
 * read, write/erase gated by EWEN/EWDS, write-all, erase-all), the two CRCs against independent
 * references, the RX address filter, the RX ring's space rule and CAPR offset, and the software
 * offload's edge cases (UDP segmentation, UFO and malformed frames dropped, counted).
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { GuestMemory } from '../../src/devices/memory';
import { BusMaster } from '../../src/devices/pci/bus-master';
import { etherCrc, frameCheckSequence, multicastHashBit } from '../../src/devices/rtl8139/crc';
import { Eeprom93C46, EEPROM_WORDS } from '../../src/devices/rtl8139/eeprom';
import { rxAcceptStatus } from '../../src/devices/rtl8139/rx-filter';
import { RING_FULL, RING_OK, RxRing } from '../../src/devices/rtl8139/rx-ring';
import { SoftwareOffload } from '../../src/devices/rtl8139/software-offload';
import { GSO_TCPV4, GSO_UDP, GSO_UDP_L4, VNET_F_NEEDS_CSUM, plainFrame } from '../../src/link/frame';
import { Meter } from '../../src/meter/meter';
import { internetChecksum, onesSum } from '../../src/wire/checksum';
import { linuxEtherCrc } from './rtl8139-driver';

/** Clock a Microwire command into the part: start bit, opcode, address, then optional data. */
function command(e: Eeprom93C46, bits: string): void {
  e.setPins(true, false, false);
  for (const b of bits) {
    const di = b === '1';
    e.setPins(true, false, di);
    e.setPins(true, true, di);
  }
}

function readWord(e: Eeprom93C46, addr: number): number {
  command(e, '1' + '10' + addr.toString(2).padStart(6, '0'));
  let v = 0;
  for (let i = 0; i < 16; i++) {
    e.setPins(true, false, false);
    e.setPins(true, true, false);
    v = (v << 1) | e.dataOut;
  }
  e.setPins(false, false, false);
  return v;
}

test('93C46: read, sequential read, writes only after EWEN, ERASE, WRAL, ERAL, EWDS', (t) => {
  const words = new Uint16Array(EEPROM_WORDS).map((_, i) => i * 0x101);
  const e = new Eeprom93C46(words);
  t.is(readWord(e, 5), 0x0505);
  // sequential: 32 clocks after one READ give two words
  command(e, '1' + '10' + '000111');
  let v = 0;
  for (let i = 0; i < 32; i++) {
    e.setPins(true, false, false);
    e.setPins(true, true, false);
    v = (v * 2 + e.dataOut) >>> 0;
  }
  e.setPins(false, false, false);
  t.is(v, ((0x0707 << 16) | 0x0808) >>> 0);
  // WRITE without EWEN: ignored
  command(e, '1' + '01' + '000011' + '1010101010101010');
  e.setPins(false, false, false);
  t.is(readWord(e, 3), 0x0303);
  command(e, '1' + '00' + '110000'); // EWEN
  e.setPins(false, false, false);
  command(e, '1' + '01' + '000011' + '1010101010101010');
  t.is(e.dataOut, 1, 'ready after programming');
  e.setPins(false, false, false);
  t.is(readWord(e, 3), 0xaaaa);
  command(e, '1' + '11' + '000011'); // ERASE
  e.setPins(false, false, false);
  t.is(readWord(e, 3), 0xffff);
  command(e, '1' + '00' + '010000' + '0001001000110100'); // WRAL 0x1234
  e.setPins(false, false, false);
  t.is(readWord(e, 63), 0x1234);
  command(e, '1' + '00' + '100000'); // ERAL
  e.setPins(false, false, false);
  t.is(readWord(e, 0), 0xffff);
  command(e, '1' + '00' + '000000'); // EWDS
  e.setPins(false, false, false);
  command(e, '1' + '01' + '000000' + '0000000000000000');
  e.setPins(false, false, false);
  t.is(readWord(e, 0), 0xffff, 'writes disabled again');
  t.throws(() => new Eeprom93C46(new Uint16Array(10)));
});

test('CRCs: the FCS matches zlib’s CRC-32 at every length and alignment; the hash CRC matches Linux ether_crc', (t) => {
  const data = new Uint8Array(1600);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  for (const [off, len] of [[0, 0], [0, 1], [1, 3], [3, 60], [2, 1514], [5, 1595]]) {
    t.is(frameCheckSequence(data, off, len), zlibCrc32(data.subarray(off, off + len)), `off ${off} len ${len}`);
  }
  for (let k = 0; k < 200; k++) {
    const mac = createHash('sha1').update(String(k)).digest().subarray(0, 6);
    t.is(etherCrc(mac), linuxEtherCrc(mac));
    t.is(multicastHashBit(mac), linuxEtherCrc(mac) >>> 26);
  }
});

test('RX filter: broadcast needs AB, multicast AM and its hash bit, our address APM, others AAP', (t) => {
  const idr = Uint8Array.of(0x52, 0x54, 0, 1, 2, 3);
  const mar = new Uint8Array(8);
  const frameTo = (d: Uint8Array): Uint8Array => {
    const f = new Uint8Array(60);
    f.set(d);
    return f;
  };
  const bc = frameTo(new Uint8Array(6).fill(0xff));
  const mc = frameTo(Uint8Array.of(0x33, 0x33, 0, 0, 0, 1));
  const me = frameTo(idr);
  const other = frameTo(Uint8Array.of(0x52, 0x54, 0, 9, 9, 9));
  t.is(rxAcceptStatus(bc, 0x0, idr, mar), 0);
  t.is(rxAcceptStatus(bc, 0x8, idr, mar), 0x2001);
  t.is(rxAcceptStatus(mc, 0x4, idr, mar), 0, 'hash bit clear');
  const bit = multicastHashBit(mc);
  mar[bit >> 3] |= 1 << (bit & 7);
  t.is(rxAcceptStatus(mc, 0x4, idr, mar), 0x8001);
  t.is(rxAcceptStatus(me, 0x2, idr, mar), 0x4001);
  t.is(rxAcceptStatus(me, 0x0, idr, mar), 0);
  t.is(rxAcceptStatus(other, 0x2, idr, mar), 0);
  t.is(rxAcceptStatus(other, 0x1, idr, mar), 0x0001);
  t.is(rxAcceptStatus(bc, 0x1, idr, mar), 0, 'AAP is physical (unicast) only');
});

test('RX ring: an entry never lets the write pointer reach the read pointer; CAPR reads R - 16', (t) => {
  const mem = GuestMemory.plain(1 << 20);
  const dma = new BusMaster(mem);
  dma.enabled = true;
  const ring = new RxRing(dma);
  ring.configure(0); // 8 KiB, no wrap
  ring.base = 0x1000;
  t.is(ring.capr, 0xfff0);
  const f = new Uint8Array(1000).fill(1);
  let n = 0;
  while (ring.put(f, 1) === RING_OK) n++;
  t.is(n, 8, '8 entries of 1008 bytes fit in 8192 without closing the ring');
  t.false(ring.empty);
  t.true(ring.free > 0 && ring.free <= 1008);
  t.is(ring.put(f, 1), RING_FULL);
  ring.capr = (ring.writeOffset - 16) & 0xffff;
  t.true(ring.empty);
  t.is(ring.put(new Uint8Array(8188), 1), RING_FULL, 'an entry as long as the ring never fits');
  ring.configure(0x1800);
  t.is(ring.length, 65536);
  t.false(ring.linearWrap, 'WRAP is not allowed with 64 KiB');
  t.is(ring.writeOffset, 0, 'a new length restarts the ring');
});

test('software offload: UDP segmentation (GSO_UDP_L4) with valid checksums; UFO, malformed and oversize segments dropped and counted', (t) => {
  const meter = new Meter();
  const stage = meter.stage('device.segment');
  const off = new SoftwareOffload(stage, 1536);
  const payload = 3000;
  const f = new Uint8Array(14 + 20 + 8 + payload);
  const v = new DataView(f.buffer);
  f[12] = 0x08;
  f[14] = 0x45;
  v.setUint16(16, 28 + payload);
  f[22] = 64;
  f[23] = 17;
  f.set([10, 0, 2, 2], 26);
  f.set([10, 0, 2, 15], 30);
  v.setUint16(34, 53);
  v.setUint16(36, 4000);
  v.setUint16(38, 8 + payload);
  for (let i = 0; i < payload; i++) f[42 + i] = i & 0xff;
  const got: Uint8Array[] = [];
  const n = off.process({ ...plainFrame(f), gsoType: GSO_UDP_L4, gsoSize: 1400, flags: VNET_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 }, (d) => got.push(d.slice()));
  t.is(n, 3);
  let total = 0;
  for (const s of got) {
    const sv = new DataView(s.buffer);
    t.is(internetChecksum(s, 14, 20), 0);
    t.is(sv.getUint16(38), s.length - 34);
    t.is(internetChecksum(s, 34, s.length - 34, onesSum(s, 26, 8) + 17 + (s.length - 34)), 0);
    total += s.length - 42;
  }
  t.is(total, payload);
  t.is(off.process({ ...plainFrame(f), gsoType: GSO_UDP, gsoSize: 1400 }, () => t.fail()), -1);
  t.is(off.process({ ...plainFrame(f.subarray(0, 20)), gsoType: GSO_TCPV4, gsoSize: 1400 }, () => t.fail()), -1);
  t.is(off.process({ ...plainFrame(f), gsoType: GSO_UDP_L4, gsoSize: 1500 }, () => t.fail()), -1, 'segment would exceed 1536');
  t.is(off.process({ ...plainFrame(f), gsoType: GSO_TCPV4, gsoSize: 1400 }, () => t.fail()), -1, 'UDP frame with TCP GSO');
  t.is(off.process({ ...plainFrame(f), flags: VNET_F_NEEDS_CSUM, csumStart: 5000, csumOffset: 6 }, () => t.fail()), -1);
  const reasons = stage.snapshot().dropReasons;
  t.is(reasons['rx-ufo-not-supported'], 1);
  t.is(reasons['rx-gso-segment-too-big'], 1);
  t.is(reasons['rx-gso-l4-mismatch'], 1);
  t.is(reasons['rx-csum-offsets-outside-frame'], 1);
  t.is(stage.copies, 3);
});
