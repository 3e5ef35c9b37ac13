/**
 * The PCI layer a vfio-user server hosts: configuration space (config-space.ts), bus-master DMA
 * (bus-master.ts), and the function/BAR/interrupt plumbing (device.ts).
 */
export * from './config-space';
export * from './bus-master';
export * from './device';
