/**
 * VfioUserConnection: the server side of one vfio-user connection (QEMU `vfio-user-pci` is the
 * client) hosting one PCI device — docs/interop/vfio-user.rst; the behaviour QEMU's client
 * expects is summarised in the project's protocol notes (§3).
 *
 * Life: AWAIT_VERSION → READY (after VERSION; 'ready' is emitted) → CLOSED (EOF, a socket error,
 * unframeable input, or close()). Closing closes the device Port (its 'close' event tells the
 * backend), unmaps guest memory and closes every fd received.
 *
 * Reading: the socket is non-blocking and watched with FdWatcher. Each readable event reads
 * whatever is queued with one recvmsg into a reusable buffer and handles every complete message
 * in it (a posted BAR write and the read behind it usually arrive together); a partial message
 * waits for the next event. SCM_RIGHTS fds belong to a message's first byte, and a unix stream
 * read never carries data past the segment that brought fds (unix(7); net/unix/af_unix.c
 * unix_stream_read_generic stops after it), so the fds of a read belong to the last message that
 * *starts* in it. Commands are processed strictly in order (the client may pipeline, e.g. DMA
 * maps during a memory transaction, or posted BAR writes). No allocation per message.
 *
 * Replies: every command gets exactly one reply — echoing its id and command, flags REPLY — unless
 * it carried NO_REPLY (posted writes: never answered, not even with an error). Errors are a bare
 * header with flags REPLY|ERROR and the errno. Malformed or unknown commands are answered with
 * an error (EINVAL, ENOSYS, E2BIG, …) and the connection carries on; only input that cannot be
 * framed (a size below 16, a message type other than command, fds beyond what a message may
 * carry) closes the connection — never the process. A command larger than the negotiated
 * maximum is read and discarded, then refused with E2BIG. A reply that does not fit the socket
 * buffer is queued and reading pauses until it is written.
 *
 * Commands:
 *   VERSION            must come first; 0.0 is the only version; the reply carries this server's
 *                      capabilities (max_msg_fds, max_data_xfer_size, pgsizes, max_dma_maps,
 *                      write_multiple if the client offered it; no "migration" — migration is
 *                      off), shortened if needed so it is not longer than the request (QEMU's
 *                      reply buffer is its request's size).
 *   DMA_MAP/UNMAP      guest RAM ranges: with an fd, mmapped (in chunks ≤ 1 GiB) into the device's
 *                      GuestMemory; without one, recorded but unreachable (ROM, non-shared RAM).
 *                      Overlaps → EEXIST; unmap must match a mapping exactly (or UNMAP_ALL);
 *                      before an unmap the device drops its views into guest memory (quiesce).
 *   DEVICE_GET_INFO    RESET|PCI, 9 regions, 5 IRQ types (QEMU wants ≥ 8 and ≥ 3).
 *   GET_REGION_INFO    BARs as the device declares them, config space 256 bytes; the rest size 0.
 *   GET_IRQ_INFO / SET_IRQS   vfio-user-irq.ts.
 *   REGION_READ/WRITE  config space or BARs (PciDevice); REGION_WRITE_MULTI (posted, ≤ 8 bytes each).
 *   DEVICE_RESET       function reset; DMA maps and IRQ eventfds stay.
 *   anything else      ENOSYS (GET_REGION_IO_FDS, DMA_READ/WRITE sent to a server, migration…).
 *
 * Meter (meter/stages.ts): stage `vfio-user.msg` counts messages (frames) and their bytes;
 * `vfio-user.wait` the ones the client waits on (no NO_REPLY: each stalls a vCPU for a round
 * trip — register reads, INTx unmasks); `vfio-user.irq` counts interrupts signalled. `stats` has per-command counts.
 */
import { EventEmitter } from 'node:events';
import { GuestMemory, makeRegion, type MemoryRegion } from '../devices/memory';
import { PciDevice, REGION_CONFIG, REGION_COUNT } from '../devices/pci/device';
import { Rtl8139, type Rtl8139Options } from '../devices/rtl8139/device';
import { PCI_CAP_ID_MSI } from '../devices/pci/config-space';
import { log } from '../log';
import type { Meter, Stage } from '../meter/meter';
import { VFIO_USER_IRQ, VFIO_USER_MSG, VFIO_USER_WAIT } from '../meter/stages';
import {
  Errno,
  FdWatcher,
  MSG_CTRUNC,
  POLL_READABLE,
  POLL_WRITABLE,
  mmap,
  munmap,
  pageSize,
  recvmsg,
  sendmsg,
  type OwnedFd,
} from '../native';
import { VfioUserInterrupts } from './vfio-user-irq';
import {
  CMD_COUNT,
  Cmd,
  DEVICE_FLAGS_PCI,
  DEVICE_FLAGS_RESET,
  DEVICE_INFO_SIZE,
  DMA_FLAG_READ,
  DMA_FLAG_WRITE,
  DMA_MAP_SIZE,
  DMA_UNMAP_FLAG_ALL,
  DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  DMA_UNMAP_SIZE,
  FLAG_ERROR,
  FLAG_NO_REPLY,
  HEADER_SIZE,
  IRQ_COUNT,
  IRQ_INFO_SIZE,
  REGION_ACCESS_SIZE,
  REGION_INFO_FLAG_READ,
  REGION_INFO_FLAG_WRITE,
  REGION_INFO_SIZE,
  SET_IRQS_SIZE,
  TYPE_COMMAND,
  TYPE_MASK,
  TYPE_REPLY,
  WRITE_MULTI_DATA_MAX,
  WRITE_MULTI_ENTRY,
  commandName,
  readU64,
  writeU64,
  type ServerCapabilities,
} from './vfio-user-protocol';

/** Largest data transfer in one REGION_READ/WRITE (advertised as max_data_xfer_size). */
export const MAX_DATA_XFER = 1 << 20;
/** Largest message accepted: a REGION_WRITE of MAX_DATA_XFER bytes. */
const MAX_MESSAGE = REGION_ACCESS_SIZE + MAX_DATA_XFER;
/** Most fds one message may carry (advertised as max_msg_fds; QEMU's own cap is 16). */
export const MAX_MSG_FDS = 16;
export const MAX_DMA_MAPS = 1024;
/** Guest RAM is mapped in pieces no larger than this (Node's external buffers are ≤ 4 GiB). */
const MAP_CHUNK = 1 << 30;

const { EINVAL, ENOSYS, E2BIG, EEXIST, ENOENT, ENOSPC, ENOTSUP } = Errno;

interface DmaMapping {
  iova: number;
  size: number;
  flags: number;
  /** Mapped pieces; empty when the client gave no fd (unreachable). */
  regions: MemoryRegion[];
}

export interface VfioUserConnectionOptions {
  name: string;
  meter: Meter;
  device?: Omit<Rtl8139Options, 'meter' | 'name'>;
}

export interface VfioUserStats {
  messages: number;
  byCommand: Record<string, number>;
  postedWrites: number;
  replies: number;
  errorReplies: number;
}

export class VfioUserConnection extends EventEmitter {
  readonly name: string;
  readonly memory: GuestMemory;
  readonly nic: Rtl8139;
  readonly pci: PciDevice;
  readonly irqs: VfioUserInterrupts;
  negotiated = false;
  closed = false;
  /** The client offered REGION_WRITE_MULTI and we accepted. */
  writeMultiple = false;

  private readonly watcher: FdWatcher;
  /** Received bytes not yet handled: [inStart, inEnd) of `inbuf`. */
  private inbuf = new Uint8Array(64 * 1024);
  private inView = new DataView(this.inbuf.buffer);
  private inStart = 0;
  private inEnd = 0;
  /** The message being handled starts at `base` of `inbuf`. */
  private base = 0;
  /** Fds of the last read, and where that read's bytes lie in `inbuf`. */
  private readFds: OwnedFd[] = [];
  private readFrom = 0;
  private readTo = 0;
  /** The fds of the message being handled (consumers null out what they keep). */
  private fds: Array<OwnedFd | null> = [];
  /** Bytes of an oversized message still to discard. */
  private skip = 0;
  private out = new Uint8Array(4096);
  private outView = new DataView(this.out.buffer);
  private readonly maps: DmaMapping[] = [];
  private pending: Uint8Array[] = [];
  private readonly counts = new Array<number>(CMD_COUNT + 1).fill(0);
  private postedWrites = 0;
  private replies = 0;
  private errorReplies = 0;
  private readonly msgStage: Stage;
  private readonly waitStage: Stage;
  private readonly unknownSeen = new Set<number>();
  private readonly debug = log.isLevelEnabled('debug');
  /** The command being handled carried NO_REPLY. */
  private quiet = false;

  constructor(
    private readonly socket: OwnedFd,
    opts: VfioUserConnectionOptions,
  ) {
    super();
    this.name = opts.name;
    this.msgStage = opts.meter.stage(VFIO_USER_MSG);
    this.waitStage = opts.meter.stage(VFIO_USER_WAIT);
    this.memory = new GuestMemory([], opts.meter);
    this.nic = new Rtl8139({ ...opts.device, name: opts.name, meter: opts.meter });
    this.pci = new PciDevice(this.nic, this.memory);
    const msiVectors = this.pci.config.findCapability(PCI_CAP_ID_MSI) !== 0 ? 1 : 0;
    this.irqs = new VfioUserInterrupts(opts.name, opts.meter.stage(VFIO_USER_IRQ), msiVectors, this.nic.identity.interruptPin !== 0);
    this.pci.onInterrupt = (asserted) => this.irqs.setLevel(asserted);
    this.pci.onInterruptCause = () => this.irqs.cause();
    this.watcher = new FdWatcher(socket, (events, status) => this.onSocket(events, status));
    this.watcher.start(POLL_READABLE);
  }

  get stats(): VfioUserStats {
    const byCommand: Record<string, number> = {};
    this.counts.forEach((n, c) => {
      if (n > 0) byCommand[commandName(c)] = n;
    });
    return {
      messages: this.counts.reduce((a, b) => a + b, 0),
      byCommand,
      postedWrites: this.postedWrites,
      replies: this.replies,
      errorReplies: this.errorReplies,
    };
  }

  /** Read whatever is waiting now (also used to notice a dead peer before accepting another). */
  pump(): void {
    this.onSocket(POLL_READABLE, 0);
  }

  close(reason = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    log.info({ connection: this.name, reason }, `vfio-user ${this.name}: connection closed (${reason})`);
    this.watcher.close();
    this.socket.close();
    this.closeFds();
    for (const f of this.readFds) f.close();
    this.readFds = [];
    this.irqs.close();
    void this.nic.close();
    this.maps.length = 0;
    this.memory.clear();
    this.emit('close', reason);
  }

  // ---- reading ----

  private onSocket(events: number, status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.close(`socket error ${status}`);
      return;
    }
    if ((events & POLL_WRITABLE) !== 0 && this.pending.length > 0) this.flushPending();
    if (this.pending.length > 0 || (events & POLL_READABLE) === 0) return;
    try {
      // one read per round; another only when the buffer filled up (more may be queued)
      for (let round = 0; round < 8 && !this.closed && this.pending.length === 0; round++) {
        const room = this.prepareRead();
        const m = recvmsg(this.socket, this.inbuf.subarray(this.inEnd, this.inEnd + room));
        if (m === null) return;
        if ((m.flags & MSG_CTRUNC) !== 0 || m.fds.length > MAX_MSG_FDS) {
          for (const f of m.fds) f.close();
          this.close('bad input: more file descriptors than a message may carry');
          return;
        }
        if (m.bytes === 0) {
          for (const f of m.fds) f.close();
          this.close(this.inEnd > this.inStart || this.skip > 0 ? 'short read: the client closed in the middle of a message' : 'client closed');
          return;
        }
        for (const f of this.readFds) f.close(); // fds no message claimed
        this.readFds = m.fds;
        this.readFrom = this.inEnd;
        this.readTo = this.inEnd + m.bytes;
        this.inEnd += m.bytes;
        this.handleBuffered();
        if (m.bytes < room) return;
      }
    } catch (err) {
      this.close(`read failed: ${(err as Error).message}`);
    }
  }

  /** Make room at the end of `inbuf` (compacting, or growing for a big message); the room. */
  private prepareRead(): number {
    if (this.inStart === this.inEnd) {
      this.readFrom -= this.inStart;
      this.readTo -= this.inStart;
      this.inStart = this.inEnd = 0;
    }
    let need = 4096;
    if (this.skip === 0 && this.inEnd - this.inStart >= HEADER_SIZE) {
      need = Math.max(need, this.inView.getUint32(this.inStart + 4, true) - (this.inEnd - this.inStart));
    }
    if (this.inbuf.length - this.inEnd >= need) return this.inbuf.length - this.inEnd;
    const used = this.inEnd - this.inStart;
    const size = Math.max(this.inbuf.length, used + need);
    const buf = size > this.inbuf.length ? new Uint8Array(size) : this.inbuf;
    if (buf === this.inbuf) buf.copyWithin(0, this.inStart, this.inEnd);
    else buf.set(this.inbuf.subarray(this.inStart, this.inEnd), 0);
    this.readFrom -= this.inStart;
    this.readTo -= this.inStart;
    this.inbuf = buf;
    this.inView = new DataView(buf.buffer);
    this.inStart = 0;
    this.inEnd = used;
    return this.inbuf.length - this.inEnd;
  }

  /** Handle every complete message in the buffer. */
  private handleBuffered(): void {
    while (!this.closed && this.pending.length === 0) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, this.inEnd - this.inStart);
        this.skip -= n;
        this.inStart += n;
        if (this.skip > 0) return;
        continue;
      }
      const avail = this.inEnd - this.inStart;
      if (avail < HEADER_SIZE) return;
      const s = this.inStart;
      const v = this.inView;
      const size = v.getUint32(s + 4, true);
      const flags = v.getUint32(s + 8, true);
      if (size < HEADER_SIZE) {
        this.close(`bad input: message size ${size}`);
        return;
      }
      if ((flags & TYPE_MASK) !== TYPE_COMMAND && (flags & TYPE_MASK) !== TYPE_REPLY) {
        this.close(`bad input: message type ${flags & TYPE_MASK}`);
        return;
      }
      // the fds of the last read go to the last message starting in it (see the file comment)
      if (this.readFds.length > 0 && s >= this.readFrom && s < this.readTo && s + size >= this.readTo) {
        this.fds = this.readFds;
        this.readFds = [];
      }
      if (size > MAX_MESSAGE) {
        this.refuseOversized(s, size);
        this.skip = size;
        continue;
      }
      if (avail < size) return;
      this.base = s;
      this.inStart = s + size;
      this.dispatch(size);
    }
  }

  private refuseOversized(s: number, size: number): void {
    const v = this.inView;
    const id = v.getUint16(s, true);
    const cmd = v.getUint16(s + 2, true);
    const flags = v.getUint32(s + 8, true);
    this.count(cmd);
    this.closeFds();
    log.warn({ connection: this.name, command: commandName(cmd), size }, `vfio-user ${this.name}: ${commandName(cmd)} of ${size} bytes refused (max ${MAX_MESSAGE})`);
    if ((flags & FLAG_NO_REPLY) === 0 && (flags & TYPE_MASK) === TYPE_COMMAND) this.replyError(id, cmd, E2BIG);
  }

  private count(cmd: number): void {
    this.counts[cmd < CMD_COUNT ? cmd : CMD_COUNT]++;
  }

  private closeFds(): void {
    for (const f of this.fds) f?.close();
    if (this.fds.length > 0) this.fds = [];
  }

  // field access within the current message
  private u16(off: number): number {
    return this.inView.getUint16(this.base + off, true);
  }
  private u32(off: number): number {
    return this.inView.getUint32(this.base + off, true);
  }
  private u64(off: number): number {
    return readU64(this.inView, this.base + off);
  }

  // ---- dispatch ----

  private dispatch(size: number): void {
    const id = this.u16(0);
    const cmd = this.u16(2);
    const flags = this.u32(8);
    this.count(cmd);
    this.msgStage.pass(1, size);
    const noReply = (flags & FLAG_NO_REPLY) !== 0;
    this.quiet = noReply;
    if (!noReply) this.waitStage.pass(1, size);
    if ((flags & TYPE_MASK) === TYPE_REPLY) {
      // this server sends no commands, so a reply answers nothing
      this.closeFds();
      if (!this.unknownSeen.has(-1)) {
        this.unknownSeen.add(-1);
        log.warn({ connection: this.name, command: commandName(cmd) }, `vfio-user ${this.name}: unexpected reply ignored`);
      }
      return;
    }
    if (this.debug) log.debug({ connection: this.name, id, command: commandName(cmd), size, flags, fds: this.fds.length }, 'vfio-user message');
    let err: number;
    try {
      err = this.handle(cmd, id, size, noReply);
    } catch (e) {
      log.error({ connection: this.name, command: commandName(cmd), err: String(e) }, `vfio-user ${this.name}: ${commandName(cmd)} failed`);
      err = Errno.EIO;
    }
    this.closeFds();
    this.quiet = false;
    if (this.closed || err === 0) return;
    if (!this.unknownSeen.has(cmd * 1000 + err)) {
      this.unknownSeen.add(cmd * 1000 + err);
      log.warn({ connection: this.name, command: commandName(cmd), errno: err }, `vfio-user ${this.name}: ${commandName(cmd)} refused (errno ${err})`);
    }
    if (!noReply) this.replyError(id, cmd, err);
  }

  /** Handle one command; 0 when done (replied if a reply was due), else the errno to answer. */
  private handle(cmd: number, id: number, size: number, noReply: boolean): number {
    if (!this.negotiated && cmd !== Cmd.VERSION) return EINVAL;
    if (this.fds.length > 0 && cmd !== Cmd.DMA_MAP && cmd !== Cmd.DEVICE_SET_IRQS) return EINVAL;
    switch (cmd) {
      case Cmd.REGION_READ:
        return this.regionRead(id, size);
      case Cmd.REGION_WRITE:
        return this.regionWrite(id, size, noReply);
      case Cmd.REGION_WRITE_MULTI:
        return this.regionWriteMulti(id, size, noReply);
      case Cmd.DEVICE_SET_IRQS:
        return this.setIrqs(id, size, noReply);
      case Cmd.VERSION:
        return this.version(id, size);
      case Cmd.DMA_MAP:
        return this.dmaMap(id, size, noReply);
      case Cmd.DMA_UNMAP:
        return this.dmaUnmap(id, size, noReply);
      case Cmd.DEVICE_GET_INFO:
        return this.deviceInfo(id, size);
      case Cmd.DEVICE_GET_REGION_INFO:
        return this.regionInfo(id, size);
      case Cmd.DEVICE_GET_IRQ_INFO:
        return this.irqInfo(id, size);
      case Cmd.DEVICE_RESET:
        this.pci.reset();
        if (!noReply) this.replyHeader(id, cmd);
        return 0;
      default:
        return ENOSYS;
    }
  }

  private version(id: number, size: number): number {
    if (this.negotiated) return EINVAL;
    if (size < HEADER_SIZE + 4) return EINVAL;
    const major = this.u16(16);
    if (major !== 0) return ENOTSUP;
    let caps: Record<string, unknown> = {};
    if (size > 20) {
      const raw = this.inbuf.subarray(this.base + 20, this.base + size);
      const nul = raw.indexOf(0);
      const text = Buffer.from(raw.buffer, raw.byteOffset, nul < 0 ? raw.length : nul).toString('utf8');
      let parsed: unknown;
      try {
        parsed = text.length > 0 ? JSON.parse(text) : {};
      } catch {
        return EINVAL;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return EINVAL;
      const c = (parsed as Record<string, unknown>).capabilities;
      if (c !== undefined && (typeof c !== 'object' || c === null || Array.isArray(c))) return EINVAL;
      caps = (c as Record<string, unknown>) ?? {};
    }
    this.writeMultiple = caps.write_multiple === true;
    const offer: ServerCapabilities = {
      max_msg_fds: MAX_MSG_FDS,
      max_data_xfer_size: MAX_DATA_XFER,
      pgsizes: pageSize(),
      max_dma_maps: MAX_DMA_MAPS,
    };
    if (this.writeMultiple) offer.write_multiple = true;
    // the reply may not be longer than the request (QEMU's reply buffer): drop optional keys
    let json = JSON.stringify({ capabilities: offer });
    const optional: Array<keyof ServerCapabilities> = ['write_multiple', 'max_dma_maps', 'pgsizes'];
    while (HEADER_SIZE + 4 + json.length + 1 > size && optional.length > 0) {
      const k = optional.shift()!;
      if (k === 'write_multiple') this.writeMultiple = false;
      delete offer[k];
      json = JSON.stringify({ capabilities: offer });
    }
    const total = HEADER_SIZE + 4 + json.length + 1;
    this.ensureOut(total);
    this.outView.setUint16(16, 0, true);
    this.outView.setUint16(18, 0, true);
    this.out.set(Buffer.from(json, 'utf8'), 20);
    this.out[total - 1] = 0;
    this.send(id, Cmd.VERSION, total);
    this.negotiated = true;
    log.info({ connection: this.name, client: caps, server: offer }, `vfio-user ${this.name}: version 0.0 negotiated`);
    this.emit('ready');
    return 0;
  }

  private dmaMap(id: number, size: number, noReply: boolean): number {
    if (size < DMA_MAP_SIZE) return EINVAL;
    const argsz = this.u32(16);
    const flags = this.u32(20);
    const offset = this.u64(24);
    const iova = this.u64(32);
    const len = this.u64(40);
    if (argsz < 32 || (flags & ~(DMA_FLAG_READ | DMA_FLAG_WRITE)) !== 0) return EINVAL;
    if (offset < 0 || iova < 0 || len <= 0 || this.fds.length > 1) return EINVAL;
    const page = pageSize();
    if (iova % page !== 0 || len % page !== 0 || offset % page !== 0) return EINVAL;
    for (const m of this.maps) if (iova < m.iova + m.size && m.iova < iova + len) return EEXIST;
    if (this.maps.length >= MAX_DMA_MAPS) return ENOSPC;
    const mapping: DmaMapping = { iova, size: len, flags, regions: [] };
    const fd = this.fds[0];
    if (fd) {
      try {
        for (let done = 0; done < len; done += MAP_CHUNK) {
          const n = Math.min(MAP_CHUNK, len - done);
          const ab = mmap(fd, offset + done, n);
          mapping.regions.push(makeRegion({ gpa: iova + done, size: n, uaddr: iova + done, mmapOffset: offset + done }, ab, 0, () => munmap(ab)));
        }
      } catch (err) {
        for (const r of mapping.regions) r.release?.();
        const code = (err as { errno?: number }).errno;
        log.warn({ connection: this.name, iova, size: len, err: (err as Error).message }, `vfio-user ${this.name}: DMA_MAP could not map guest memory`);
        return code !== undefined ? Math.abs(code) : Errno.ENOMEM;
      }
    }
    this.maps.push(mapping);
    this.maps.sort((a, b) => a.iova - b.iova);
    this.syncMemory();
    if (this.debug) log.debug({ connection: this.name, iova: `0x${iova.toString(16)}`, size: len, fd: !!fd }, 'vfio-user DMA map');
    if (!noReply) this.replyHeader(id, Cmd.DMA_MAP);
    return 0;
  }

  private dmaUnmap(id: number, size: number, noReply: boolean): number {
    if (size < DMA_UNMAP_SIZE) return EINVAL;
    const argsz = this.u32(16);
    const flags = this.u32(20);
    const iova = this.u64(24);
    const len = this.u64(32);
    if (argsz < 24 || (flags & ~(DMA_UNMAP_FLAG_ALL | DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)) !== 0) return EINVAL;
    if ((flags & DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) !== 0) return ENOTSUP; // no dirty tracking: no migration
    // the device must not hold views into what goes away
    this.nic.quiesce();
    if ((flags & DMA_UNMAP_FLAG_ALL) !== 0) {
      this.maps.length = 0;
    } else {
      const i = this.maps.findIndex((m) => m.iova === iova && m.size === len);
      if (i < 0) return ENOENT;
      this.maps.splice(i, 1);
    }
    this.syncMemory();
    if (!noReply) {
      // header plus the echoed request struct (QEMU accepts either)
      this.ensureOut(DMA_UNMAP_SIZE);
      this.out.set(this.inbuf.subarray(this.base + 16, this.base + DMA_UNMAP_SIZE), 16);
      this.send(id, Cmd.DMA_UNMAP, DMA_UNMAP_SIZE);
    }
    return 0;
  }

  private syncMemory(): void {
    const regions: MemoryRegion[] = [];
    for (const m of this.maps) for (const r of m.regions) regions.push(r);
    this.memory.setRegions(regions);
  }

  private deviceInfo(id: number, size: number): number {
    if (size < DEVICE_INFO_SIZE) return EINVAL;
    if (this.u32(16) < 16) return EINVAL;
    const o = this.outView;
    o.setUint32(16, 16, true);
    o.setUint32(20, DEVICE_FLAGS_RESET | DEVICE_FLAGS_PCI, true);
    o.setUint32(24, REGION_COUNT, true);
    o.setUint32(28, IRQ_COUNT, true);
    this.send(id, Cmd.DEVICE_GET_INFO, DEVICE_INFO_SIZE);
    return 0;
  }

  private regionInfo(id: number, size: number): number {
    if (size < REGION_INFO_SIZE) return EINVAL;
    const argsz = this.u32(16);
    const index = this.u32(24);
    if (argsz < 32 || index >= REGION_COUNT) return EINVAL;
    const regionSize = this.pci.regionSize(index);
    const o = this.outView;
    o.setUint32(16, 32, true);
    o.setUint32(20, regionSize > 0 ? REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE : 0, true);
    o.setUint32(24, index, true);
    o.setUint32(28, 0, true);
    writeU64(o, 32, regionSize);
    writeU64(o, 40, 0);
    this.send(id, Cmd.DEVICE_GET_REGION_INFO, REGION_INFO_SIZE);
    return 0;
  }

  private irqInfo(id: number, size: number): number {
    if (size < IRQ_INFO_SIZE) return EINVAL;
    const argsz = this.u32(16);
    const index = this.u32(24);
    if (argsz < 16 || index >= IRQ_COUNT) return EINVAL;
    const o = this.outView;
    o.setUint32(16, 16, true);
    o.setUint32(20, this.irqs.infoFlags(index), true);
    o.setUint32(24, index, true);
    o.setUint32(28, this.irqs.count(index), true);
    this.send(id, Cmd.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE);
    return 0;
  }

  private setIrqs(id: number, size: number, noReply: boolean): number {
    if (size < SET_IRQS_SIZE) return EINVAL;
    const argsz = this.u32(16);
    const flags = this.u32(20);
    const index = this.u32(24);
    const start = this.u32(28);
    const count = this.u32(32);
    if (argsz < 20 || count > 64) return EINVAL;
    const data = this.inbuf.subarray(this.base + SET_IRQS_SIZE, this.base + size);
    const err = this.irqs.set(flags, index, start, count, data, this.fds);
    if (err !== 0) return err;
    if (!noReply) this.replyHeader(id, Cmd.DEVICE_SET_IRQS);
    return 0;
  }

  private regionRead(id: number, size: number): number {
    if (size < REGION_ACCESS_SIZE) return EINVAL;
    const offset = this.u64(16);
    const region = this.u32(24);
    const count = this.u32(28);
    if (offset < 0 || count > MAX_DATA_XFER || region >= REGION_COUNT) return EINVAL;
    const total = REGION_ACCESS_SIZE + count;
    this.ensureOut(total);
    if (region !== REGION_CONFIG) this.irqs.noteAccess();
    if (!this.pci.regionRead(region, offset, this.out, REGION_ACCESS_SIZE, count)) return EINVAL;
    const o = this.outView;
    writeU64(o, 16, offset);
    o.setUint32(24, region, true);
    o.setUint32(28, count, true);
    this.send(id, Cmd.REGION_READ, total);
    return 0;
  }

  private regionWrite(id: number, size: number, noReply: boolean): number {
    if (size < REGION_ACCESS_SIZE) return EINVAL;
    const offset = this.u64(16);
    const region = this.u32(24);
    const count = this.u32(28);
    if (offset < 0 || region >= REGION_COUNT || count > size - REGION_ACCESS_SIZE) return EINVAL;
    if (region !== REGION_CONFIG) this.irqs.noteAccess();
    if (!this.pci.regionWrite(region, offset, this.inbuf, this.base + REGION_ACCESS_SIZE, count)) return EINVAL;
    if (noReply) {
      this.postedWrites++;
      return 0;
    }
    const o = this.outView;
    writeU64(o, 16, offset);
    o.setUint32(24, region, true);
    o.setUint32(28, count, true);
    this.send(id, Cmd.REGION_WRITE, REGION_ACCESS_SIZE);
    return 0;
  }

  private regionWriteMulti(id: number, size: number, noReply: boolean): number {
    if (size < HEADER_SIZE + 8) return EINVAL;
    const n = this.u64(16);
    if (n < 0 || HEADER_SIZE + 8 + n * WRITE_MULTI_ENTRY > size) return EINVAL;
    let bad = 0;
    this.irqs.noteAccess();
    for (let k = 0; k < n; k++) {
      const e = HEADER_SIZE + 8 + k * WRITE_MULTI_ENTRY;
      const offset = this.u64(e);
      const region = this.u32(e + 8);
      const count = this.u32(e + 12);
      if (offset < 0 || region >= REGION_COUNT || region === REGION_CONFIG || count > WRITE_MULTI_DATA_MAX) {
        bad++;
        continue;
      }
      if (!this.pci.regionWrite(region, offset, this.inbuf, this.base + e + 16, count)) bad++;
    }
    this.postedWrites += n;
    if (bad > 0) return EINVAL;
    if (!noReply) this.replyHeader(id, Cmd.REGION_WRITE_MULTI);
    return 0;
  }

  // ---- replies ----

  private ensureOut(total: number): void {
    if (total <= this.out.length) return;
    let n = this.out.length;
    while (n < total) n *= 2;
    this.out = new Uint8Array(n);
    this.outView = new DataView(this.out.buffer);
  }

  private replyHeader(id: number, cmd: number): void {
    this.send(id, cmd, HEADER_SIZE);
  }

  private replyError(id: number, cmd: number, errno: number): void {
    const o = this.outView;
    o.setUint16(0, id, true);
    o.setUint16(2, cmd, true);
    o.setUint32(4, HEADER_SIZE, true);
    o.setUint32(8, TYPE_REPLY | FLAG_ERROR, true);
    o.setUint32(12, errno, true);
    this.errorReplies++;
    this.write(HEADER_SIZE);
  }

  private send(id: number, cmd: number, total: number): void {
    if (this.quiet) return; // a NO_REPLY command is never answered, whatever it asked for
    const o = this.outView;
    o.setUint16(0, id, true);
    o.setUint16(2, cmd, true);
    o.setUint32(4, total, true);
    o.setUint32(8, TYPE_REPLY, true);
    o.setUint32(12, 0, true);
    this.write(total);
  }

  private write(total: number): void {
    this.replies++;
    const bytes = this.out.subarray(0, total);
    if (this.pending.length > 0) {
      this.pending.push(bytes.slice());
      return;
    }
    let n: number;
    try {
      n = sendmsg(this.socket, bytes);
    } catch (err) {
      this.close(`reply failed: ${(err as Error).message}`);
      return;
    }
    if (n === total) return;
    // the socket buffer is full: keep the rest, stop reading until it is out
    this.pending.push(bytes.slice(Math.max(0, n)));
    this.watcher.start(POLL_WRITABLE);
  }

  private flushPending(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0];
      let n: number;
      try {
        n = sendmsg(this.socket, head);
      } catch (err) {
        this.close(`reply failed: ${(err as Error).message}`);
        return;
      }
      if (n < 0) return;
      if (n < head.length) {
        this.pending[0] = head.subarray(n);
        return;
      }
      this.pending.shift();
    }
    this.watcher.start(POLL_READABLE);
  }
}
