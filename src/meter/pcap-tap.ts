/**
 * PcapTap: Port middleware that records both directions crossing it into a CaptureWriter.
 *
 *   caller ──send()──► PcapTap ──send()──► inner        recorded as OUTBOUND
 *   caller ◄─handler── PcapTap ◄─emits──── inner        recorded as INBOUND
 *
 * Each direction is recorded *before* it is passed on, so the file shows the frame as it was at
 * this tap point even if a later stage rewrites it in place. A tap is one interface of its
 * writer (its name is the tap point, e.g. "guest" or "nat"); several taps may share one pcapng
 * writer and then appear as separate interfaces of one file, in one time line. Recording costs
 * one metered copy per frame (into the writer's buffer) and never blocks.
 *
 * Closing a tap closes the Port it wraps; the writer is closed too only when the tap owns it
 * (`ownsWriter`), since a shared writer outlives any one tap.
 */
import type { Frame } from '../link/frame';
import { PortMiddleware, type Port } from '../link/port';
import { DIRECTION_INBOUND, DIRECTION_OUTBOUND, type CaptureWriter } from './pcap';

export interface PcapTapOptions {
  /** Name of the tap point (the pcapng interface name). Default: the inner port's name. */
  name?: string;
  /** Close the writer when the tap is closed. Default false. */
  ownsWriter?: boolean;
}

export class PcapTap extends PortMiddleware {
  /** This tap's interface id in the writer. */
  readonly iface: number;
  private readonly writer: CaptureWriter;
  private readonly ownsWriter: boolean;
  private closing: Promise<void> | null = null;

  constructor(inner: Port, writer: CaptureWriter, opts: PcapTapOptions = {}) {
    const name = opts.name ?? inner.name;
    super(name, inner);
    this.writer = writer;
    this.ownsWriter = opts.ownsWriter ?? false;
    this.iface = writer.addInterface(name);
  }

  protected override outbound(frames: readonly Frame[]): void {
    this.writer.write(this.iface, DIRECTION_OUTBOUND, frames);
    this.inner.send(frames);
  }

  protected override inbound(frames: readonly Frame[]): void {
    this.writer.write(this.iface, DIRECTION_INBOUND, frames);
    this.handler(frames);
  }

  override close(): Promise<void> {
    if (this.closing === null) {
      this.closing = (async () => {
        try {
          await this.inner.close();
        } finally {
          if (this.ownsWriter) await this.writer.close();
        }
      })();
    }
    return this.closing;
  }
}
