/**
 * The PCI layer on its own: configuration-space byte semantics (read-only, writable,
 * write-1-to-clear), the capabilities list, BAR sizing for I/O and memory, reset, the INTx line
 * with Interrupt Disable, access splitting, decode enables, and bus-master DMA rules.
 */
import test from 'ava';
import { GuestMemory } from '../../src/devices/memory';
import { DMA_FAULT, DMA_NO_MASTER, DMA_OK } from '../../src/devices/pci/bus-master';
import {
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_STATUS,
  PciConfigSpace,
  msiCapability,
  powerManagementCapability,
} from '../../src/devices/pci/config-space';
import { PciDevice, accessWidth, type AccessSize, type PciFunction, type PciHost } from '../../src/devices/pci/device';
import { Meter } from '../../src/meter/meter';

const ID = { vendorId: 0x1234, deviceId: 0x5678, revision: 3, classCode: 0x020000, subsystemVendorId: 0x1234, subsystemId: 1, interruptPin: 1 };

/** A function that records its accesses and lets the test drive its line. */
class Probe implements PciFunction {
  readonly identity = ID;
  readonly bars = [
    { index: 0, kind: 'io' as const, size: 32 },
    { index: 2, kind: 'mem32' as const, size: 4096, prefetchable: true },
  ];
  readonly capabilities = [powerManagementCapability(0x40), msiCapability(0x50)];
  host!: PciHost;
  readonly log: string[] = [];
  resets = 0;
  attach(host: PciHost): void {
    this.host = host;
  }
  barRead(bar: number, offset: number, size: AccessSize): number {
    this.log.push(`r${bar}:${offset}/${size}`);
    return (0x11223344 >>> (8 * (offset & 3))) & (0xffffffff >>> (32 - 8 * size));
  }
  barWrite(bar: number, offset: number, size: AccessSize, value: number): void {
    this.log.push(`w${bar}:${offset}/${size}=${value.toString(16)}`);
  }
  reset(): void {
    this.resets++;
  }
  quiesce(): void {}
}

test('header bytes: IDs read-only, command masked, status write-1-to-clear, cap list linked', (t) => {
  const c = new PciConfigSpace(ID, [], [powerManagementCapability(0x40), msiCapability(0x50)]);
  c.writeValue(0, 4, 0);
  t.is(c.read(0, 4), 0x56781234);
  c.writeValue(PCI_COMMAND, 2, 0xffff);
  t.is(c.read(PCI_COMMAND, 2), 0x0547, 'only I/O, memory, master, parity, SERR, INTx-disable');
  c.setStatusBits(0x2000 | 0x4000);
  t.is(c.read(PCI_STATUS, 2) & 0x6000, 0x6000);
  c.writeValue(PCI_STATUS, 2, 0x2000);
  t.is(c.read(PCI_STATUS, 2) & 0x6000, 0x4000, 'one bit cleared, the other kept');
  c.writeValue(PCI_STATUS, 2, 0x0010);
  t.truthy(c.read(PCI_STATUS, 2) & 0x0010, 'Capabilities List is read-only');
  t.is(c.read(0x34, 1), 0x40);
  t.is(c.findCapability(PCI_CAP_ID_PM), 0x40);
  t.is(c.findCapability(PCI_CAP_ID_MSI), 0x50);
  t.is(c.read(0x41, 1), 0x50, 'PM links to MSI');
  t.is(c.read(0x51, 1), 0, 'MSI ends the list');
  // PMCSR: power state writable, PME_Status W1C; PMC read-only
  c.writeValue(0x44, 2, 0x8003);
  t.is(c.read(0x44, 2) & 0x3, 3);
  c.writeValue(0x42, 2, 0);
  t.is(c.read(0x42, 2), 0x0602);
  // MSI: enable and address writable, low address bits fixed
  c.writeValue(0x52, 2, 0x0001);
  c.writeValue(0x54, 4, 0xfee00003);
  t.is(c.read(0x52, 2) & 1, 1);
  t.is(c.read(0x54, 4), 0xfee00000);
  t.false(c.readInto(250, new Uint8Array(8)));
  t.false(c.write(-1, new Uint8Array(1)));
});

test('BARs: sizing, type bits, address bits, unimplemented BARs read 0; reset keeps addresses, clears the command', (t) => {
  const c = new PciConfigSpace(ID, [
    { index: 0, kind: 'io', size: 32 },
    { index: 2, kind: 'mem32', size: 4096, prefetchable: true },
  ]);
  c.writeValue(0x10, 4, 0xffffffff);
  t.is(c.read(0x10, 4), 0xffffffe1);
  c.writeValue(0x18, 4, 0xffffffff);
  t.is(c.read(0x18, 4), 0xfffff008);
  c.writeValue(0x14, 4, 0xffffffff);
  t.is(c.read(0x14, 4), 0);
  c.writeValue(0x18, 4, 0xfebf0000);
  c.writeValue(PCI_COMMAND, 2, 7);
  c.reset();
  t.is(c.read(0x18, 4), 0xfebf0008);
  t.is(c.read(PCI_COMMAND, 2), 0);
  t.throws(() => new PciConfigSpace(ID, [{ index: 0, kind: 'mem32', size: 100 }]), { instanceOf: RangeError });
  t.throws(() => new PciConfigSpace(ID, [{ index: 6, kind: 'io', size: 16 }]), { instanceOf: RangeError });
});

test('PciDevice: accesses split into naturally aligned pieces; decoding follows the command register', (t) => {
  const fn = new Probe();
  const dev = new PciDevice(fn, GuestMemory.plain(4096));
  const buf = new Uint8Array(8);
  t.true(dev.regionRead(0, 0, buf));
  t.true(buf.every((b) => b === 0xff), 'I/O decoding off: all ones');
  t.deepEqual(fn.log, []);
  dev.config.writeValue(PCI_COMMAND, 2, 0x3);
  t.true(dev.regionRead(0, 0, buf));
  t.deepEqual(fn.log, ['r0:0/4', 'r0:4/4']);
  fn.log.length = 0;
  t.true(dev.regionRead(0, 1, buf.subarray(0, 3)));
  t.deepEqual(fn.log, ['r0:1/1', 'r0:2/2']);
  fn.log.length = 0;
  t.true(dev.regionWrite(2, 6, Uint8Array.of(1, 2, 3, 4, 5, 6)));
  t.deepEqual(fn.log, ['w2:6/2=201', 'w2:8/4=6050403']);
  t.false(dev.regionRead(0, 30, new Uint8Array(4)), 'past the end of the BAR');
  t.false(dev.regionRead(1, 0, new Uint8Array(4)), 'BAR1 not implemented');
  t.is(dev.regionSize(2), 4096);
  t.is(dev.regionSize(7), 256);
  t.is(accessWidth(3, 8), 1);
  t.is(accessWidth(2, 8), 2);
  t.is(accessWidth(4, 3), 2);
});

test('PciDevice: INTx line = function level unless Interrupt Disable; Status.Interrupt shows the level; causes pass through; reset resets both', (t) => {
  const fn = new Probe();
  const dev = new PciDevice(fn, GuestMemory.plain(4096));
  const line: boolean[] = [];
  let causes = 0;
  dev.onInterrupt = (a) => line.push(a);
  dev.onInterruptCause = () => causes++;
  fn.host.setIrq(true);
  t.deepEqual(line, [true]);
  t.truthy(dev.config.read(PCI_STATUS, 2) & 0x8);
  dev.config.writeValue(PCI_COMMAND, 2, 0x400);
  t.deepEqual(line, [true, false]);
  t.truthy(dev.config.read(PCI_STATUS, 2) & 0x8, 'status still shows it');
  dev.config.writeValue(PCI_COMMAND, 2, 0);
  t.deepEqual(line, [true, false, true]);
  fn.host.interruptCause();
  t.is(causes, 1);
  fn.host.setIrq(false);
  dev.reset();
  t.is(fn.resets, 1);
  t.is(dev.config.read(PCI_STATUS, 2) & 0x8, 0);
});

test('bus master: no DMA without Bus Master Enable; an unbacked address is a master abort (status bit 13); a range over two regions is split', (t) => {
  const meter = new Meter();
  const mem = GuestMemory.plain(8192, meter);
  const fn = new Probe();
  const dev = new PciDevice(fn, mem);
  const dma = fn.host.dma;
  const buf = new Uint8Array(16);
  t.is(dma.read(0, 16, buf), DMA_NO_MASTER);
  t.is(dma.write(0, buf), DMA_NO_MASTER);
  t.is(dma.view(0, 16), null);
  dev.config.writeValue(PCI_COMMAND, 2, 0x4);
  t.is(dma.write(100, Uint8Array.of(1, 2, 3)), DMA_OK);
  t.is(dma.read(100, 3, buf), DMA_OK);
  t.deepEqual(buf.subarray(0, 3), Uint8Array.of(1, 2, 3));
  t.is(meter.stage('device.dma').copies, 2, 'both copies metered');
  t.is(dma.read(0x10000, 4, buf), DMA_FAULT);
  t.truthy(dev.config.read(PCI_STATUS, 2) & 0x2000);
  t.is(dma.masterAborts, 1);
  // two adjacent regions: a write across the boundary lands in both
  const { makeRegion } = require('../../src/devices/memory') as typeof import('../../src/devices/memory');
  const a = new ArrayBuffer(4096);
  const b = new ArrayBuffer(4096);
  mem.setRegions([makeRegion({ gpa: 0, size: 4096, uaddr: 0, mmapOffset: 0 }, a), makeRegion({ gpa: 4096, size: 4096, uaddr: 4096, mmapOffset: 0 }, b)]);
  t.is(dma.write(4094, Uint8Array.of(9, 8, 7, 6)), DMA_OK);
  t.deepEqual(new Uint8Array(a, 4094, 2), Uint8Array.of(9, 8));
  t.deepEqual(new Uint8Array(b, 0, 2), Uint8Array.of(7, 6));
  t.is(dma.view(4094, 4), null, 'no single view across regions');
  t.is(dma.read(4094, 4, buf), DMA_OK);
  t.deepEqual(buf.subarray(0, 4), Uint8Array.of(9, 8, 7, 6));
});
