/**
 * The emulated RTL8139 (device.ts for the model, registers.ts for the map): a PciFunction for
 * the PCI layer and a Port for the backends.
 *
 *   const nic = new Rtl8139({ mac: '52:54:00:12:34:56', meter });
 *   const pci = new PciDevice(nic, memory);   // transports/vfio-user does this per connection
 *   join(nic, natStack);
 */
export { Rtl8139, parseMac, formatMac, DEFAULT_MAC, RTL8139_REVISION, type Rtl8139Options } from './device';
export { Eeprom93C46, rtl8139EepromImage } from './eeprom';
export { RxRing } from './rx-ring';
export { SoftwareOffload } from './software-offload';
export { frameCheckSequence, etherCrc, multicastHashBit } from './crc';
export * as regs from './registers';
