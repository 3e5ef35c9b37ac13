/**
 * src/wire: zero-copy views of packets (one re-pointable `XPacket` view and one `XRepr` per
 * protocol, after smoltcp's wire module), Internet checksums, TCP sequence arithmetic and
 * address helpers. DNS messages go through the dns-packet library instead.
 */
export * from './error';
export * from './view';
export * from './checksum';
export * from './address';
export * from './ethernet';
export * from './arp';
export * from './ipv4';
export * from './ipv6';
export * from './icmpv4';
export * from './icmpv6';
export * from './udp';
export * from './tcp';
export * from './dhcp';
