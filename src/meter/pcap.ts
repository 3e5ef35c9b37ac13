/**
 * Capture files: classic libpcap and pcapng writers behind one `CaptureWriter` interface, both
 * feeding a buffered asynchronous file sink.
 *
 * Formats
 * - libpcap (tcpdump's classic format, https://www.tcpdump.org/manpages/pcap-savefile.5.html and
 *   draft-ietf-opsawg-pcap): a 24-byte global header (magic 0xa1b2c3d4 = microsecond timestamps,
 *   version 2.4, snaplen, LINKTYPE_ETHERNET = 1), then per packet a 16-byte record header
 *   (ts_sec, ts_usec, incl_len, orig_len) and the bytes. One link, no direction: every tap
 *   sharing a classic writer lands in the same stream.
 * - pcapng (draft-ietf-opsawg-pcapng): a Section Header Block (§4.1, byte-order magic
 *   0x1A2B3C4D, shb_userappl), one Interface Description Block per tap point (§4.2, with if_name
 *   and if_tsresol = 9, i.e. nanoseconds), and an Enhanced Packet Block per frame (§4.3) with an
 *   epb_flags option (§4.3.1) whose low two bits carry the direction: 01 inbound, 10 outbound.
 *   Interface ids are the order of IDBs in the section, so `addInterface` writes its IDB at once.
 *   Blocks are written in host (little-endian) byte order, as the format allows.
 *
 * Frames with offloads (GSO super-frames, NEEDS_CSUM partial checksums) are captured as they are,
 * like tcpdump on a tap with offloads on: one big frame, a checksum field holding the pseudo-header
 * sum. Frames longer than the snaplen are truncated (orig_len keeps the real length).
 *
 * Buffering (CaptureSink): records are copied — one metered copy per frame, Stage `pcap.write` —
 * into the current chunk of a small pool of large buffers. A full chunk is queued and written
 * with one fs write; a timer (armed once, not per packet) also seals a partial chunk so a quiet
 * capture still reaches the disk soon; close() seals and drains everything. Memory is bounded by
 * `maxBufferBytes`: when every chunk is waiting for the disk, records are dropped and counted
 * (`pcap.write` drop reason `disk-behind`) rather than buffered without bound. The write into the
 * page cache is metered as a copy on Stage `pcap.flush`. Write errors are logged once, further
 * records are dropped (`write-error`), and close() rejects with the first error.
 *
 * Timestamps are taken once per batch (the frames of one send() crossed the tap at one moment)
 * from a monotonic clock anchored to the wall clock when the writer opened.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { Frame } from '../link/frame';
import { copyBytes, globalMeter, type Meter, type Stage } from './meter';
import { PCAP_FLUSH, PCAP_WRITE } from './stages';
import { logOnce } from '../log';

/** Direction of a captured frame relative to its tap point (pcapng epb_flags bits 0-1). */
export const DIRECTION_UNKNOWN = 0;
export const DIRECTION_INBOUND = 1;
export const DIRECTION_OUTBOUND = 2;
export type CaptureDirection = typeof DIRECTION_UNKNOWN | typeof DIRECTION_INBOUND | typeof DIRECTION_OUTBOUND;

export const LINKTYPE_ETHERNET = 1;
export const DEFAULT_SNAPLEN = 262144;

export type CaptureFormat = 'pcap' | 'pcapng';

export interface CaptureStats {
  /** Frames recorded into the buffer. */
  frames: number;
  /** Original bytes of those frames. */
  bytes: number;
  /** Frames dropped (disk behind, write error, after close). */
  dropped: number;
  /** Bytes handed to the file (headers included). */
  written: number;
  /** Write errors seen (the first one is kept in `error`). */
  writeErrors: number;
}

export interface CaptureWriterOptions {
  /** Per-frame capture length; longer frames are truncated. Default 262144. */
  snaplen?: number;
  /** Size of one buffer chunk; raised to fit the largest record. Default 1 MiB. */
  chunkBytes?: number;
  /** Bound on buffered bytes waiting for the disk. Default 8 MiB. */
  maxBufferBytes?: number;
  /** A partial chunk is written at most this long after its first record. Default 100 ms. */
  flushIntervalMs?: number;
  meter?: Meter;
  /** Stage counting the record copies. Default `pcap.write`. */
  stageName?: string;
  /** pcapng: shb_userappl. Default "usernet". */
  application?: string;
}

/** What a tap writes into. Several taps may share one writer. */
export interface CaptureWriter {
  readonly format: CaptureFormat;
  readonly path: string;
  /**
   * Declare a capture point; returns the interface id to pass to `write`. pcapng writes an IDB
   * named `name`; classic pcap has a single link and always returns 0.
   */
  addInterface(name: string): number;
  /** Record a batch crossing interface `iface` in direction `dir`. Never throws, never blocks. */
  write(iface: number, dir: CaptureDirection, frames: readonly Frame[]): void;
  /** Resolves once everything recorded so far is in the file. */
  flush(): Promise<void>;
  /** Flush, then close the file. Idempotent. Rejects with the first write error, if any. */
  close(): Promise<void>;
  stats(): CaptureStats;
}

export class CaptureWriteError extends Error {
  readonly code = 'ECAPTUREWRITE';
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`capture ${path}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'CaptureWriteError';
  }
}

const pad4 = (n: number): number => (n + 3) & ~3;

/**
 * (sec, nsec) of wall-clock time without a per-call allocation: performance.now() (monotonic,
 * sub-microsecond) measured from an anchor taken together with Date.now().
 */
class CaptureClock {
  sec = 0;
  nsec = 0;
  private readonly baseSec: number;
  private readonly baseNsec: number;
  private readonly basePerf: number;

  constructor() {
    const wall = Date.now();
    this.basePerf = performance.now();
    this.baseSec = Math.floor(wall / 1000);
    this.baseNsec = (wall - this.baseSec * 1000) * 1e6;
  }

  /** Update `sec`/`nsec` to now. */
  tick(): void {
    const ns = Math.round((performance.now() - this.basePerf) * 1e6) + this.baseNsec;
    const s = Math.floor(ns / 1e9);
    this.sec = this.baseSec + s;
    this.nsec = ns - s * 1e9;
  }
}

/**
 * The 64-bit count of nanoseconds `sec * 1e9 + nsec` as two 32-bit halves, exactly, with
 * doubles only (the product overflows 2^53). sec < 2^32, nsec < 1e9.
 */
export function nanosHiLo(sec: number, nsec: number, out: { hi: number; lo: number }): void {
  const sh = Math.floor(sec / 65536);
  const sl = sec - sh * 65536;
  const x = sh * 1e9; // < 2^46, exact; contributes x * 2^16
  const xh = Math.floor(x / 65536);
  const y = (x - xh * 65536) * 65536 + sl * 1e9 + nsec; // < 2^47, exact
  const yh = Math.floor(y / 4294967296);
  out.hi = xh + yh;
  out.lo = y - yh * 4294967296;
}

/**
 * The file end of a writer: a pool of chunks filled by `reserve`, written in order, one at a
 * time. States: opening (records buffer, nothing written) → open → closing (no new records,
 * draining) → closed. A write error turns it into "failed": buffers are discarded.
 */
class CaptureSink {
  readonly chunkBytes: number;
  private readonly maxChunks: number;
  private readonly free: Buffer[] = [];
  private readonly full: Buffer[] = [];
  private readonly fullLen: number[] = [];
  private allocated = 0;
  /** The chunk being filled, its DataView, and its fill level. */
  cur: Buffer | null = null;
  view: DataView | null = null;
  used = 0;

  private fh: FileHandle | null = null;
  private writing = false;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private waiters: Array<() => void> = [];
  error: CaptureWriteError | null = null;
  written = 0;
  writeErrors = 0;

  constructor(
    readonly path: string,
    chunkBytes: number,
    maxBufferBytes: number,
    private readonly flushIntervalMs: number,
    private readonly diskStage: Stage,
  ) {
    this.chunkBytes = chunkBytes;
    this.maxChunks = Math.max(2, Math.ceil(maxBufferBytes / chunkBytes));
  }

  async open(): Promise<void> {
    this.fh = await open(this.path, 'w');
    this.pump();
  }

  get accepting(): boolean {
    return !this.closed && this.error === null;
  }

  /**
   * Room for `n` bytes in the current chunk: returns the offset in `cur` (and advances `used`),
   * or -1 when the pool is exhausted. `force` allows one chunk past the bound (file headers and
   * IDBs, which must not be lost).
   */
  reserve(n: number, force = false): number {
    if (this.cur !== null && this.chunkBytes - this.used >= n) {
      const at = this.used;
      this.used += n;
      return at;
    }
    if (this.cur !== null) this.seal();
    let chunk = this.free.pop();
    if (chunk === undefined) {
      if (this.allocated >= this.maxChunks && !force) return -1;
      chunk = Buffer.allocUnsafe(this.chunkBytes);
      this.allocated++;
    }
    this.cur = chunk;
    this.view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.used = n;
    this.armTimer();
    return 0;
  }

  /** Queue the current chunk for writing. */
  seal(): void {
    if (this.cur === null) return;
    if (this.used > 0) {
      this.full.push(this.cur);
      this.fullLen.push(this.used);
    } else this.free.push(this.cur);
    this.cur = null;
    this.view = null;
    this.used = 0;
    this.pump();
  }

  /** Resolves when every chunk sealed so far has been written (or the sink failed). */
  drained(): Promise<void> {
    if (!this.writing && this.full.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async flush(): Promise<void> {
    this.seal();
    await this.drained();
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      await this.flush();
      const fh = this.fh;
      this.fh = null;
      if (fh) {
        try {
          await fh.close();
        } catch (err) {
          this.fail(err);
        }
      }
    } else await this.drained();
    if (this.error) throw this.error;
  }

  private armTimer(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.used > 0) this.seal();
    }, this.flushIntervalMs);
    this.timer.unref();
  }

  private fail(err: unknown): void {
    this.writeErrors++;
    if (this.error === null) {
      this.error = new CaptureWriteError(this.path, err);
      logOnce(`pcap.write-error:${this.path}`, 'capture file write failed; dropping further records', {
        path: this.path,
        err: this.error.message,
      });
    }
  }

  /** Write queued chunks one after another. */
  private pump(): void {
    if (this.writing || this.fh === null || this.full.length === 0) return;
    this.writing = true;
    void this.writeQueued(this.fh);
  }

  private async writeQueued(fh: FileHandle): Promise<void> {
    while (this.full.length > 0) {
      const chunk = this.full[0];
      const len = this.fullLen[0];
      if (this.error === null) {
        try {
          let off = 0;
          while (off < len) {
            const { bytesWritten } = await fh.write(chunk, off, len - off, null);
            if (bytesWritten <= 0) throw new Error('short write');
            off += bytesWritten;
          }
          this.written += len;
          this.diskStage.copied(len);
        } catch (err) {
          this.fail(err);
        }
      }
      this.full.shift();
      this.fullLen.shift();
      this.free.push(chunk);
    }
    this.writing = false;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** What the two formats share: options, counters, the sink, and the record loop. */
abstract class BaseCaptureWriter implements CaptureWriter {
  abstract readonly format: CaptureFormat;
  protected readonly snaplen: number;
  protected readonly stage: Stage;
  protected readonly sink: CaptureSink;
  protected readonly clock = new CaptureClock();
  protected frames = 0;
  protected bytes = 0;
  protected dropped = 0;

  protected constructor(
    readonly path: string,
    opts: CaptureWriterOptions,
    /** Record overhead beyond the (padded) packet bytes. */
    maxOverhead: number,
  ) {
    this.snaplen = Math.max(1, Math.floor(opts.snaplen ?? DEFAULT_SNAPLEN));
    const meter = opts.meter ?? globalMeter;
    const stageName = opts.stageName ?? PCAP_WRITE;
    this.stage = meter.stage(stageName);
    // a chunk holds at least one largest record, and the section/interface headers
    const chunk = Math.max(opts.chunkBytes ?? 1 << 20, pad4(this.snaplen) + maxOverhead, 4096);
    this.sink = new CaptureSink(
      path,
      chunk,
      opts.maxBufferBytes ?? 8 << 20,
      opts.flushIntervalMs ?? 100,
      meter.stage(stageName === PCAP_WRITE ? PCAP_FLUSH : `${stageName}.flush`),
    );
  }

  abstract addInterface(name: string): number;
  protected abstract recordLength(capLen: number, dir: CaptureDirection): number;
  protected abstract writeRecordHeader(
    v: DataView,
    at: number,
    iface: number,
    dir: CaptureDirection,
    capLen: number,
    origLen: number,
  ): number;
  /** Whatever follows the packet bytes that end at `end`. */
  protected abstract writeRecordTrailer(v: DataView, buf: Buffer, end: number, dir: CaptureDirection, recLen: number): void;

  write(iface: number, dir: CaptureDirection, frames: readonly Frame[]): void {
    const n = frames.length;
    if (n === 0) return;
    if (!this.sink.accepting) {
      this.dropMany(n, this.sink.error ? 'write-error' : 'closed');
      return;
    }
    this.clock.tick();
    const sink = this.sink;
    const stage = this.stage;
    let recorded = 0;
    let recordedBytes = 0;
    for (let i = 0; i < n; i++) {
      const data = frames[i].data;
      const origLen = data.length;
      const capLen = origLen > this.snaplen ? this.snaplen : origLen;
      const recLen = this.recordLength(capLen, dir);
      const at = sink.reserve(recLen);
      if (at < 0) {
        this.dropMany(1, 'disk-behind');
        continue;
      }
      const buf = sink.cur as Buffer;
      const v = sink.view as DataView;
      const dataAt = this.writeRecordHeader(v, at, iface, dir, capLen, origLen);
      copyBytes(stage, capLen === origLen ? data : data.subarray(0, capLen), buf, dataAt);
      this.writeRecordTrailer(v, buf, dataAt + capLen, dir, recLen);
      recorded++;
      recordedBytes += origLen;
    }
    this.frames += recorded;
    this.bytes += recordedBytes;
    stage.pass(recorded, recordedBytes);
  }

  flush(): Promise<void> {
    return this.sink.flush();
  }

  close(): Promise<void> {
    return this.sink.close();
  }

  stats(): CaptureStats {
    return {
      frames: this.frames,
      bytes: this.bytes,
      dropped: this.dropped,
      written: this.sink.written,
      writeErrors: this.sink.writeErrors,
    };
  }

  /** Reserve with the bound lifted: headers and interface blocks are never dropped. */
  protected reserveForced(n: number): number {
    return this.sink.reserve(n, true);
  }

  private dropMany(n: number, reason: string): void {
    this.dropped += n;
    for (let i = 0; i < n; i++) {
      if (this.stage.dropped(reason) && reason !== 'closed') {
        logOnce(`pcap.${reason}`, 'capture dropping records', { path: this.path, reason });
      }
    }
  }
}

/** Classic libpcap, microsecond timestamps, LINKTYPE_ETHERNET. */
export class PcapWriter extends BaseCaptureWriter {
  readonly format = 'pcap' as const;

  private constructor(path: string, opts: CaptureWriterOptions) {
    super(path, opts, 16);
    const at = this.reserveForced(24);
    const v = this.sink.view as DataView;
    v.setUint32(at, 0xa1b2c3d4, true);
    v.setUint16(at + 4, 2, true);
    v.setUint16(at + 6, 4, true);
    v.setInt32(at + 8, 0, true); // thiszone
    v.setUint32(at + 12, 0, true); // sigfigs
    v.setUint32(at + 16, this.snaplen, true);
    v.setUint32(at + 20, LINKTYPE_ETHERNET, true);
  }

  /** Create (truncate) `path` and return a writer whose header is already queued. */
  static async open(path: string, opts: CaptureWriterOptions = {}): Promise<PcapWriter> {
    const w = new PcapWriter(path, opts);
    await w.sink.open();
    return w;
  }

  addInterface(_name: string): number {
    return 0;
  }

  protected recordLength(capLen: number): number {
    return 16 + capLen;
  }

  protected writeRecordHeader(
    v: DataView,
    at: number,
    _iface: number,
    _dir: CaptureDirection,
    capLen: number,
    origLen: number,
  ): number {
    v.setUint32(at, this.clock.sec, true);
    v.setUint32(at + 4, Math.floor(this.clock.nsec / 1000), true);
    v.setUint32(at + 8, capLen, true);
    v.setUint32(at + 12, origLen, true);
    return at + 16;
  }

  protected writeRecordTrailer(): void {}
}

const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 0x00000001;
const BT_EPB = 0x00000006;
const OPT_ENDOFOPT = 0;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;
/** Longest text option written (if_name, shb_userappl); keeps header blocks within a chunk. */
const MAX_OPTION_TEXT = 1024;

/** pcapng: one section, an IDB per tap point, EPBs with nanosecond timestamps and direction. */
export class PcapngWriter extends BaseCaptureWriter {
  readonly format = 'pcapng' as const;
  private readonly names: string[] = [];
  private readonly ts = { hi: 0, lo: 0 };

  private constructor(path: string, opts: CaptureWriterOptions) {
    // EPB: 28 header + 12 epb_flags option and end-of-options + 4 trailing length
    super(path, opts, 44);
    const app = Buffer.from(opts.application ?? 'usernet', 'utf8').subarray(0, MAX_OPTION_TEXT);
    const len = 28 + 4 + pad4(app.length) + 4;
    const at = this.reserveForced(len);
    const v = this.sink.view as DataView;
    const buf = this.sink.cur as Buffer;
    v.setUint32(at, BT_SHB, true);
    v.setUint32(at + 4, len, true);
    v.setUint32(at + 8, 0x1a2b3c4d, true);
    v.setUint16(at + 12, 1, true);
    v.setUint16(at + 14, 0, true);
    v.setInt32(at + 16, -1, true); // section length unknown (-1 as a 64-bit value)
    v.setInt32(at + 20, -1, true);
    const o = this.writeOption(v, buf, at + 24, SHB_USERAPPL, app);
    v.setUint32(o, OPT_ENDOFOPT, true);
    v.setUint32(o + 4, len, true);
  }

  /** Create (truncate) `path` and return a writer whose section header is already queued. */
  static async open(path: string, opts: CaptureWriterOptions = {}): Promise<PcapngWriter> {
    const w = new PcapngWriter(path, opts);
    await w.sink.open();
    return w;
  }

  /** Names of the interfaces declared so far, by id. */
  interfaces(): readonly string[] {
    return this.names;
  }

  addInterface(name: string): number {
    const id = this.names.length;
    this.names.push(name);
    const nameBytes = Buffer.from(name, 'utf8').subarray(0, MAX_OPTION_TEXT);
    // header 16, if_name, if_tsresol (4 + 4), end of options, trailing length
    const len = 16 + 4 + pad4(nameBytes.length) + 8 + 4 + 4;
    const at = this.reserveForced(len);
    const v = this.sink.view as DataView;
    const buf = this.sink.cur as Buffer;
    v.setUint32(at, BT_IDB, true);
    v.setUint32(at + 4, len, true);
    v.setUint16(at + 8, LINKTYPE_ETHERNET, true);
    v.setUint16(at + 10, 0, true);
    v.setUint32(at + 12, this.snaplen, true);
    let o = this.writeOption(v, buf, at + 16, IF_NAME, nameBytes);
    v.setUint16(o, IF_TSRESOL, true);
    v.setUint16(o + 2, 1, true);
    v.setUint32(o + 4, 9, true); // value byte 9 = 10^-9 s, then three bytes of padding
    o += 8;
    v.setUint32(o, OPT_ENDOFOPT, true);
    v.setUint32(o + 4, len, true);
    return id;
  }

  protected recordLength(capLen: number, dir: CaptureDirection): number {
    return 28 + pad4(capLen) + (dir === DIRECTION_UNKNOWN ? 0 : 12) + 4;
  }

  protected writeRecordHeader(
    v: DataView,
    at: number,
    iface: number,
    dir: CaptureDirection,
    capLen: number,
    origLen: number,
  ): number {
    nanosHiLo(this.clock.sec, this.clock.nsec, this.ts);
    v.setUint32(at, BT_EPB, true);
    v.setUint32(at + 4, this.recordLength(capLen, dir), true);
    v.setUint32(at + 8, iface, true);
    v.setUint32(at + 12, this.ts.hi, true);
    v.setUint32(at + 16, this.ts.lo, true);
    v.setUint32(at + 20, capLen, true);
    v.setUint32(at + 24, origLen, true);
    return at + 28;
  }

  protected writeRecordTrailer(v: DataView, buf: Buffer, end: number, dir: CaptureDirection, recLen: number): void {
    let o = pad4(end);
    if (o > end) buf.fill(0, end, o); // packet data is padded to 32 bits with zeros
    if (dir !== DIRECTION_UNKNOWN) {
      v.setUint16(o, EPB_FLAGS, true);
      v.setUint16(o + 2, 4, true);
      v.setUint32(o + 4, dir, true);
      v.setUint32(o + 8, OPT_ENDOFOPT, true);
      o += 12;
    }
    v.setUint32(o, recLen, true);
  }

  private writeOption(v: DataView, buf: Buffer, at: number, code: number, value: Uint8Array): number {
    v.setUint16(at, code, true);
    v.setUint16(at + 2, value.length, true);
    buf.set(value, at + 4);
    const end = at + 4 + value.length;
    const padded = at + 4 + pad4(value.length);
    if (padded > end) buf.fill(0, end, padded);
    return padded;
  }
}

/** Open a writer; the format follows `format`, else the file name (`.pcapng` → pcapng, else pcap). */
export function openCapture(
  path: string,
  opts: CaptureWriterOptions & { format?: CaptureFormat } = {},
): Promise<CaptureWriter> {
  const format = opts.format ?? (path.endsWith('.pcapng') ? 'pcapng' : 'pcap');
  return format === 'pcapng' ? PcapngWriter.open(path, opts) : PcapWriter.open(path, opts);
}
