/**
 * A vfio-user client for tests: what QEMU's hw/vfio-user does, by hand, over a real unix socket
 * (requests with ids, SCM_RIGHTS fds, replies matched by id, NO_REPLY posted writes).
 */
import {
  FdWatcher,
  POLL_READABLE,
  POLL_WRITABLE,
  recvmsg,
  sendmsg,
  unixConnect,
  type OwnedFd,
} from '../../src/native';
import { Cmd, FLAG_ERROR, FLAG_NO_REPLY, HEADER_SIZE, writeU64 } from '../../src/transports/vfio-user-protocol';

export const QEMU_CAPS =
  '{"capabilities":{"migration":{"pgsize":4096,"max_bitmap_size":268435456},"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}';

export interface Reply {
  id: number;
  cmd: number;
  flags: number;
  error: number;
  size: number;
  /** The whole reply, header included. */
  bytes: Uint8Array;
  view: DataView;
}

export class VfioUserClient {
  readonly sock: OwnedFd;
  private buf = new Uint8Array(0);
  private readonly watcher: FdWatcher;
  private nextId = 1;
  private readonly waiting = new Map<number, (r: Reply) => void>();
  readonly unsolicited: Reply[] = [];
  closed = false;
  private closeWaiters: Array<() => void> = [];

  /** Bytes not yet written (the socket buffer was full), with the fds of their first message. */
  private outq: Array<{ bytes: Uint8Array; fds: OwnedFd[] | null }> = [];

  constructor(path: string) {
    this.sock = unixConnect(path);
    const chunk = new Uint8Array(1 << 16);
    this.watcher = new FdWatcher(this.sock, (events) => {
      if (events & POLL_WRITABLE) this.flush();
      if (!(events & POLL_READABLE)) return;
      for (;;) {
        const m = recvmsg(this.sock, chunk);
        if (m === null) break;
        for (const f of m.fds) f.close();
        if (m.bytes === 0) {
          this.closed = true;
          this.watcher.stop();
          for (const w of this.closeWaiters) w();
          this.closeWaiters = [];
          break;
        }
        const merged = new Uint8Array(this.buf.length + m.bytes);
        merged.set(this.buf);
        merged.set(chunk.subarray(0, m.bytes), this.buf.length);
        this.buf = merged;
      }
      this.parse();
    });
    this.watcher.start(POLL_READABLE);
  }

  private parse(): void {
    while (this.buf.length >= HEADER_SIZE) {
      const v = new DataView(this.buf.buffer, this.buf.byteOffset);
      const size = v.getUint32(4, true);
      if (this.buf.length < size) return;
      const bytes = this.buf.slice(0, size);
      this.buf = this.buf.slice(size);
      const bv = new DataView(bytes.buffer);
      const r: Reply = { id: bv.getUint16(0, true), cmd: bv.getUint16(2, true), size, flags: bv.getUint32(8, true), error: bv.getUint32(12, true), bytes, view: bv };
      const w = this.waiting.get(r.id);
      if (w) {
        this.waiting.delete(r.id);
        w(r);
      } else this.unsolicited.push(r);
    }
  }

  /** Send a raw message (header built here unless `raw`); resolves with the reply unless NO_REPLY. */
  send(cmd: number, payload: Uint8Array, opts: { fds?: OwnedFd[]; flags?: number; id?: number; sizeOverride?: number } = {}): { id: number; reply: Promise<Reply> } {
    const id = opts.id ?? this.nextId++ & 0xffff;
    const msg = new Uint8Array(HEADER_SIZE + payload.length);
    const v = new DataView(msg.buffer);
    v.setUint16(0, id, true);
    v.setUint16(2, cmd, true);
    v.setUint32(4, opts.sizeOverride ?? msg.length, true);
    v.setUint32(8, opts.flags ?? 0, true);
    msg.set(payload, HEADER_SIZE);
    const reply = new Promise<Reply>((resolve) => this.waiting.set(id, resolve));
    this.outq.push({ bytes: msg, fds: opts.fds ?? null });
    if (this.outq.length === 1) this.flush();
    return { id, reply };
  }

  private flush(): void {
    while (this.outq.length > 0) {
      const head = this.outq[0];
      const n = sendmsg(this.sock, head.bytes, head.fds);
      if (n < 0) break;
      if (n < head.bytes.length) {
        this.outq[0] = { bytes: head.bytes.subarray(n), fds: null };
        break;
      }
      this.outq.shift();
    }
    this.watcher.start(this.outq.length > 0 ? POLL_READABLE | POLL_WRITABLE : POLL_READABLE);
  }

  request(cmd: number, payload: Uint8Array, opts: { fds?: OwnedFd[]; flags?: number } = {}): Promise<Reply> {
    return this.send(cmd, payload, opts).reply;
  }

  /** A posted command (NO_REPLY): nothing comes back. */
  post(cmd: number, payload: Uint8Array): void {
    const { id } = this.send(cmd, payload, { flags: FLAG_NO_REPLY });
    this.waiting.delete(id);
  }

  waitClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((r) => this.closeWaiters.push(r));
  }

  close(): void {
    this.watcher.close();
    this.sock.close();
  }

  // ---- QEMU's messages ----

  async version(json = QEMU_CAPS, major = 0, minor = 0): Promise<Reply> {
    const text = Buffer.from(json + '\0', 'utf8');
    const p = new Uint8Array(4 + text.length);
    const v = new DataView(p.buffer);
    v.setUint16(0, major, true);
    v.setUint16(2, minor, true);
    p.set(text, 4);
    return this.request(Cmd.VERSION, p);
  }

  dmaMap(iova: number, size: number, offset: number, fd: OwnedFd | null, flags = 3): Promise<Reply> {
    const p = new Uint8Array(32);
    const v = new DataView(p.buffer);
    v.setUint32(0, 32, true);
    v.setUint32(4, flags, true);
    writeU64(v, 8, offset);
    writeU64(v, 16, iova);
    writeU64(v, 24, size);
    return this.request(Cmd.DMA_MAP, p, { fds: fd ? [fd] : [] });
  }

  dmaUnmap(iova: number, size: number, flags = 0): Promise<Reply> {
    const p = new Uint8Array(24);
    const v = new DataView(p.buffer);
    v.setUint32(0, 24, true);
    v.setUint32(4, flags, true);
    writeU64(v, 8, iova);
    writeU64(v, 16, size);
    return this.request(Cmd.DMA_UNMAP, p);
  }

  regionReadMsg(region: number, offset: number, count: number): Uint8Array {
    const p = new Uint8Array(16);
    const v = new DataView(p.buffer);
    writeU64(v, 0, offset);
    v.setUint32(8, region, true);
    v.setUint32(12, count, true);
    return p;
  }

  async read(region: number, offset: number, count: number): Promise<Uint8Array> {
    const r = await this.request(Cmd.REGION_READ, this.regionReadMsg(region, offset, count));
    if (r.flags & FLAG_ERROR) throw Object.assign(new Error(`REGION_READ failed: errno ${r.error}`), { errno: r.error });
    return r.bytes.slice(32, 32 + r.view.getUint32(28, true));
  }

  async readValue(region: number, offset: number, count: 1 | 2 | 4): Promise<number> {
    const b = await this.read(region, offset, count);
    let v = 0;
    for (let i = count - 1; i >= 0; i--) v = v * 256 + b[i];
    return v;
  }

  writeMsg(region: number, offset: number, value: number, count: 1 | 2 | 4): Uint8Array {
    const p = new Uint8Array(16 + count);
    const v = new DataView(p.buffer);
    writeU64(v, 0, offset);
    v.setUint32(8, region, true);
    v.setUint32(12, count, true);
    for (let i = 0; i < count; i++) p[16 + i] = (value >>> (8 * i)) & 0xff;
    return p;
  }

  /** A non-posted write (waits for the reply, like config space and I/O BARs). */
  write(region: number, offset: number, value: number, count: 1 | 2 | 4): Promise<Reply> {
    return this.request(Cmd.REGION_WRITE, this.writeMsg(region, offset, value, count));
  }

  /** A posted write (NO_REPLY, like QEMU's memory-BAR writes). */
  postWrite(region: number, offset: number, value: number, count: 1 | 2 | 4): void {
    this.post(Cmd.REGION_WRITE, this.writeMsg(region, offset, value, count));
  }

  setIrqs(index: number, flags: number, start: number, count: number, fds: OwnedFd[] = [], data?: Uint8Array): Promise<Reply> {
    const p = new Uint8Array(20 + (data?.length ?? 0));
    const v = new DataView(p.buffer);
    v.setUint32(0, 20, true);
    v.setUint32(4, flags, true);
    v.setUint32(8, index, true);
    v.setUint32(12, start, true);
    v.setUint32(16, count, true);
    if (data) p.set(data, 20);
    return this.request(Cmd.DEVICE_SET_IRQS, p, { fds });
  }

  info(cmd: number, index: number, argsz: number): Promise<Reply> {
    const p = new Uint8Array(argsz);
    const v = new DataView(p.buffer);
    v.setUint32(0, argsz, true);
    if (argsz >= 12) v.setUint32(8, index, true);
    return this.request(cmd, p);
  }
}
