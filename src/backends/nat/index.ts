/**
 * The user-mode NAT backend (see stack.ts for the path of a frame, and each protocol's file for
 * its rules).
 *
 *   const stack = createNatStack({ config, meter });   // TCP module and port forwarder included
 *   join(guestPort, stack);
 *   stack.setOffloads(true, true);                     // what the guest side accepts
 *   await stack.ready;                                 // configured forwards open (or the error)
 */
import type { NatContext, ProtocolModule } from './context';
import { PortForwarder } from './forward';
import { NatStack, type NatStackOptions } from './stack';
import { createTcpModule, TcpModule } from './tcp';
import { log } from '../../log';

export { NatStack, type NatStackOptions, type NatStats, type Forwarder, type StackContext } from './stack';
export { natConfig, parseHostForward, formatHostForward, parseQemuUserOptions, type NatConfig, type HostForward } from './config';
export type { Family, GuestPacket, GuestOutput, NatContext, OutFrame, ProtocolModule } from './context';
export { copyAddress } from './context';
export { FlowTable, FlowNode, flowHash, type FlowTableOptions, type EvictReason } from './flows';
export { GuestOutputQueue, NeighborCache, finishTransportChecksum } from './guest-output';
export { AddressPolicy } from './policy';
export { UdpModule, sendUdpToGuest } from './udp';
export { IcmpModule } from './icmp';
export { DnsServer, parseUpstream, readResolvConf, HOST_NAME } from './dns';
export { DhcpServer, type LeaseInfo } from './dhcp';
export { ArpResponder } from './arp';

export interface CreateNatStackOptions extends Omit<NatStackOptions, 'tcp'> {
  /** The TCP module: default tcp.ts's; null for none (TCP refused with ICMP). */
  tcp?: ((ctx: NatContext) => ProtocolModule) | null;
}

/**
 * A NAT stack with the TCP module and the port forwarder (forward.ts) plugged in, already
 * opening its configured forwards: `await stack.ready` to know they are open. (Synchronous so a
 * caller can join it to its Port at once; `await createNatStack(...)` works too.)
 */
export function createNatStack(options: CreateNatStackOptions = {}): NatStack {
  const tcpFactory = options.tcp === undefined ? (ctx: NatContext) => createTcpModule(ctx) : options.tcp;
  const stack = new NatStack({
    ...options,
    tcp: tcpFactory ?? undefined,
    forwarder:
      options.forwarder ??
      ((s, tcp) =>
        tcp instanceof TcpModule ? new PortForwarder({ ctx: s, tcp, udp: s.udp, guestAddress: () => s.guestAddress() }) : null),
  });
  // Opening forwards may fail (port taken): the error belongs to whoever awaits `ready`; a
  // caller that does not await still hears about it in the log.
  stack.start().catch((err: Error) => log.error({ err: err.message }, 'NAT: a configured port forward could not be opened'));
  return stack;
}
