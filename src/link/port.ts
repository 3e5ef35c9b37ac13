/**
 * Port: anything that sends and receives Frames in batches. Device models, transports and
 * backends meet only through Ports; middleware Ports (pcap tap, fault injector, rate limiter)
 * wrap another Port and are indistinguishable from it.
 *
 * `send(frames)` hands a batch to the port (towards whatever is behind it). Frames the port
 * produces are delivered to the handler installed with `onReceive`. Both directions are
 * batches: one call per burst, never one call per frame when more are at hand.
 */
import type { Frame } from './frame';

export type FrameHandler = (frames: readonly Frame[]) => void;

export interface Port {
  readonly name: string;
  /** Deliver a batch to this port. Frames are only borrowed for the duration of the call. */
  send(frames: readonly Frame[]): void;
  /** Install the handler for frames this port emits (one handler; a later call replaces it). */
  onReceive(handler: FrameHandler): void;
  /** Release every resource (fds, sockets, timers). Idempotent. */
  close(): Promise<void>;
}

/** A handler that drops everything: the state of a port before anyone listens. */
export const DISCARD: FrameHandler = () => {};

/** Connect two ports back to back: what one emits, the other is sent. */
/**
 * A receiver that can say it is full: while `rxBlocked`, frames sent to it would be queued or
 * dropped; 'rx-unblocked' says it can take frames again. Devices whose guest takes frames at
 * its own pace (virtio-net, the RTL8139, a QEMU stream socket) implement it; a sender that can
 * wait (a tap, the NAT's TCP) holds back instead of filling their queues.
 */
export interface RxBackpressure {
  readonly rxBlocked: boolean;
  on(event: 'rx-unblocked', listener: () => void): unknown;
  off(event: 'rx-unblocked', listener: () => void): unknown;
}

export function hasRxBackpressure(x: unknown): x is RxBackpressure {
  return typeof x === 'object' && x !== null && 'rxBlocked' in x && typeof (x as { off?: unknown }).off === 'function';
}

export function join(a: Port, b: Port): void {
  a.onReceive((frames) => b.send(frames));
  b.onReceive((frames) => a.send(frames));
}

/**
 * Base for middleware: wraps `inner`; by default passes both directions through unchanged.
 * Subclasses override `outbound` (towards inner) and/or `inbound` (from inner to our handler).
 */
export abstract class PortMiddleware implements Port {
  protected handler: FrameHandler = DISCARD;

  constructor(readonly name: string, protected readonly inner: Port) {
    inner.onReceive((frames) => this.inbound(frames));
  }

  send(frames: readonly Frame[]): void {
    this.outbound(frames);
  }

  onReceive(handler: FrameHandler): void {
    this.handler = handler;
  }

  protected outbound(frames: readonly Frame[]): void {
    this.inner.send(frames);
  }

  protected inbound(frames: readonly Frame[]): void {
    this.handler(frames);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
