/**
 * StackContext: what the stack's own protocol modules (udp.ts, icmp.ts) get from the stack
 * besides NatContext — the guest output queue, the address policy, the host namespace and the
 * ICMP error sender that takes an already rewritten quote (RFC 5508).
 *
 * An interface file of its own so that the modules depend on this shape and not on stack.ts
 * (which builds them): no import cycle between the stack and its modules.
 */
import type { Family, NatContext } from './context';
import type { GuestOutputQueue } from './guest-output';
import type { AddressPolicy } from './policy';

export interface StackContext extends NatContext {
  readonly out: GuestOutputQueue;
  readonly policy: AddressPolicy;
  /** Network namespace (path or name) in which host sockets are opened; null: our own. */
  readonly hostNetns: string | null;
  /**
   * Send an ICMP error to guest address `to` from `from`, quoting `quote` (an IP header plus
   * the start of the guest's datagram, already rewritten to what the guest sent: RFC 5508).
   */
  icmpErrorQuote(family: Family, to: Uint8Array, from: Uint8Array, type: number, code: number, info: number, quote: Uint8Array): void;
}
