/**
 * VhostUserConnection: the back-end side of one vhost-user connection (QEMU = front-end), with
 * the virtio-net device it drives (QEMU docs/interop/vhost-user.rst; hw/virtio/vhost-user.c).
 *
 * Reading: the socket is non-blocking and watched with FdWatcher. Each message is read as a
 * 12-byte header (recvmsg, which also collects the SCM_RIGHTS fds QEMU sends with it) and then
 * its payload; partial reads just wait for the next readable event. EOF in the middle of a
 * message (a short read), a header with a wrong version or a reply flag, a payload larger than
 * VHOST_USER_MAX_PAYLOAD, or more fds than a message can carry close *this* connection with one
 * log line; nothing is thrown out of the event loop.
 *
 * Messages handled (net back-end, one queue pair): GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES
 * (we offer REPLY_ACK only: no MQ, no CONFIG, no LOG_SHMFD), SET_OWNER, RESET_OWNER,
 * RESET_DEVICE, SET_MEM_TABLE (each region mmapped from its fd, the old ones unmapped, ring
 * pointers re-translated), SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE (stops the ring, answers its
 * next avail index, drops the kick fd), SET_VRING_KICK (watched eventfd; starts the ring and
 * scans what the guest already posted), SET_VRING_CALL (eventfd written to interrupt the guest),
 * SET_VRING_ERR (eventfd written when a ring needs reset), SET_VRING_ENABLE, GET_QUEUE_NUM,
 * GET/SET_CONFIG (answered from the device config space even though CONFIG is not offered),
 * NET_SET_MTU, SEND_RARP (ignored). SET_LOG_BASE/SET_LOG_FD are refused (no dirty logging, so
 * no live migration). Anything else: one log line per request id and, when the front-end asked
 * for an ack (NEED_REPLY), a failure ack. Replies carry flags 0x5.
 *
 * Ring life (spec "Ring states"): stopped+disabled initially; SET_VRING_KICK starts; GET_VRING_BASE
 * stops; enable comes from SET_VRING_ENABLE when PROTOCOL_FEATURES was negotiated, else from
 * SET_FEATURES. Connection life: open → (SET_FEATURES: 'ready', the device is announced) →
 * closed (EOF, bad input, or close()); closing closes the device Port (its 'close' event lets the
 * backend drop this guest's flows), unmaps guest memory and closes every fd received.
 */
import { EventEmitter } from 'node:events';
import { GuestMemory, makeRegion, type MemoryRegion } from '../devices/memory';
import { VHOST_USER_F_PROTOCOL_FEATURES, bit, hasBit } from '../devices/virtio/features';
import { RX_QUEUE, VirtioNetDevice, type VirtioNetOptions } from '../devices/virtio/net-device';
import { log } from '../log';
import type { Meter } from '../meter/meter';
import {
  FdWatcher,
  MSG_CTRUNC,
  POLL_READABLE,
  eventfdRead,
  eventfdWrite,
  mmap,
  munmap,
  pageSize,
  recvmsg,
  sendmsg,
  type OwnedFd,
} from '../native';
import {
  PROTOCOL_F_REPLY_ACK,
  Req,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  decodeMemTable,
  decodeVringAddr,
  requestName,
  writeU64,
} from './vhost-user-protocol';

/** The most fds one message may carry (SET_MEM_TABLE: one per region). */
const MAX_FDS = 8;
/** Messages handled per readable event before yielding. */
const MESSAGES_PER_EVENT = 64;

export interface VhostUserConnectionOptions {
  /** Name for logs and the device Port. */
  name: string;
  meter: Meter;
  /** Device options (features offered, MAC, MTU, backlog). */
  device?: Omit<VirtioNetOptions, 'memory' | 'name' | 'meter'>;
}

interface Kick {
  fd: OwnedFd;
  watcher: FdWatcher;
}

export class VhostUserConnection extends EventEmitter {
  readonly name: string;
  readonly memory: GuestMemory;
  readonly device: VirtioNetDevice;
  /** Set once the front-end sent SET_FEATURES (the device has its offloads). */
  ready = false;
  closed = false;
  protocolFeatures = 0n;

  private readonly watcher: FdWatcher;
  private readonly header = new Uint8Array(VHOST_USER_HDR_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly payload = new Uint8Array(VHOST_USER_MAX_PAYLOAD);
  private readonly reply = new Uint8Array(VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD);
  private readonly replyView = new DataView(this.reply.buffer);
  private inPayload = false;
  private got = 0;
  private request = 0;
  private flags = 0;
  private size = 0;
  private fds: OwnedFd[] = [];
  private readonly kicks: Array<Kick | null> = [null, null];
  private readonly calls: Array<OwnedFd | null> = [null, null];
  private readonly errs: Array<OwnedFd | null> = [null, null];
  private readonly unknownSeen = new Set<number>();

  constructor(
    private readonly socket: OwnedFd,
    opts: VhostUserConnectionOptions,
  ) {
    super();
    this.name = opts.name;
    this.memory = new GuestMemory([], opts.meter);
    this.device = new VirtioNetDevice({ ...opts.device, name: opts.name, memory: this.memory, meter: opts.meter });
    this.device.on('needs-reset', (queue: number) => {
      const err = this.errs[queue];
      if (err) eventfdWrite(err, 1);
    });
    this.watcher = new FdWatcher(socket, (events, status) => this.onSocket(events, status));
    this.watcher.start(POLL_READABLE);
  }

  /** Read whatever is waiting now (also used to notice a dead peer before accepting a new one). */
  pump(): void {
    this.onSocket(POLL_READABLE, 0);
  }

  /** Close the connection: the device Port closes, memory is unmapped, every fd closed. */
  close(reason = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    log.info({ connection: this.name, reason }, `vhost-user ${this.name}: connection closed (${reason})`);
    this.watcher.close();
    this.socket.close();
    for (let i = 0; i < 2; i++) {
      this.dropKick(i);
      this.calls[i]?.close();
      this.calls[i] = null;
      this.errs[i]?.close();
      this.errs[i] = null;
    }
    for (const f of this.fds) f.close();
    this.fds = [];
    void this.device.close();
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
    if ((events & POLL_READABLE) === 0) return;
    for (let n = 0; n < MESSAGES_PER_EVENT && !this.closed; n++) {
      const target = this.inPayload ? this.payload.subarray(this.got, this.size) : this.header.subarray(this.got);
      let m;
      try {
        m = recvmsg(this.socket, target);
      } catch (err) {
        this.close(`recvmsg failed: ${(err as Error).message}`);
        return;
      }
      if (m === null) return;
      for (const f of m.fds) this.fds.push(f);
      if ((m.flags & MSG_CTRUNC) !== 0 || this.fds.length > MAX_FDS) {
        this.close('bad input: too many file descriptors with one message');
        return;
      }
      if (m.bytes === 0) {
        this.close(this.got > 0 || this.inPayload ? 'short read: the peer closed in the middle of a message' : 'peer closed');
        return;
      }
      this.got += m.bytes;
      if (!this.inPayload) {
        if (this.got < VHOST_USER_HDR_SIZE) continue;
        const h = this.headerView;
        this.request = h.getUint32(0, true);
        this.flags = h.getUint32(4, true);
        this.size = h.getUint32(8, true);
        if ((this.flags & 0x3) !== VHOST_USER_VERSION || (this.flags & VHOST_USER_REPLY_MASK) !== 0) {
          this.close(`bad input: header flags 0x${this.flags.toString(16)} (request ${this.request})`);
          return;
        }
        if (this.size > VHOST_USER_MAX_PAYLOAD) {
          this.close(`bad input: ${requestName(this.request)} with a ${this.size}-byte payload`);
          return;
        }
        this.got = 0;
        if (this.size > 0) {
          this.inPayload = true;
          continue;
        }
      } else if (this.got < this.size) continue;
      this.inPayload = false;
      this.got = 0;
      const fds = this.fds;
      this.fds = [];
      this.dispatch(this.request, this.flags, new DataView(this.payload.buffer, 0, this.size), fds);
    }
  }

  // ---- dispatch ----

  private dispatch(req: number, flags: number, p: DataView, fds: OwnedFd[]): void {
    const needReply = (flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
    if (log.isLevelEnabled('debug')) {
      log.debug({ connection: this.name, request: requestName(req), flags, size: p.byteLength, fds: fds.length }, 'vhost-user message');
    }
    let result: string | null = null; // error text, or null for success
    let explicit = false; // a reply with a payload was sent
    try {
      switch (req) {
        case Req.GET_FEATURES:
          this.replyU64(req, this.device.deviceFeatures | bit(VHOST_USER_F_PROTOCOL_FEATURES));
          explicit = true;
          break;
        case Req.SET_FEATURES:
          result = this.need(p, 8) ?? this.setFeatures(p.getBigUint64(0, true));
          break;
        case Req.GET_PROTOCOL_FEATURES:
          this.replyU64(req, bit(PROTOCOL_F_REPLY_ACK));
          explicit = true;
          break;
        case Req.SET_PROTOCOL_FEATURES:
          result = this.need(p, 8);
          if (!result) this.protocolFeatures = p.getBigUint64(0, true) & bit(PROTOCOL_F_REPLY_ACK);
          break;
        case Req.SET_OWNER:
          break;
        case Req.RESET_OWNER:
        case Req.RESET_DEVICE:
          this.resetDevice();
          break;
        case Req.GET_QUEUE_NUM:
          this.replyU64(req, 1n);
          explicit = true;
          break;
        case Req.SET_MEM_TABLE:
          result = this.setMemTable(p, fds);
          break;
        case Req.SET_VRING_NUM:
          result = this.need(p, 8) ?? this.withQueue(p, (q) => this.device.queue(q)!.setSize(p.getUint32(4, true)));
          break;
        case Req.SET_VRING_ADDR:
          result = this.setVringAddr(p);
          break;
        case Req.SET_VRING_BASE:
          result =
            this.need(p, 8) ??
            this.withQueue(p, (q) => {
              this.device.queue(q)!.setBase(p.getUint32(4, true));
              return null;
            });
          break;
        case Req.GET_VRING_BASE: {
          const err = this.need(p, 8) ?? this.withQueue(p, () => null);
          if (err) {
            // the front-end waits for this reply whatever happens
            result = err;
            this.replyState(req, p.byteLength >= 4 ? p.getUint32(0, true) : 0, 0);
            explicit = true;
            break;
          }
          const q = p.getUint32(0, true);
          const next = this.device.stopQueue(q);
          this.dropKick(q);
          this.replyState(req, q, next);
          explicit = true;
          break;
        }
        case Req.SET_VRING_KICK:
          result = this.need(p, 8) ?? this.setVringKick(p, fds);
          break;
        case Req.SET_VRING_CALL:
          result = this.need(p, 8) ?? this.setVringFd(p, fds, this.calls, true);
          break;
        case Req.SET_VRING_ERR:
          result = this.need(p, 8) ?? this.setVringFd(p, fds, this.errs, false);
          break;
        case Req.SET_VRING_ENABLE:
          result =
            this.need(p, 8) ??
            this.withQueue(p, (q) => {
              this.device.queue(q)!.enabled = p.getUint32(4, true) !== 0;
              if (q === RX_QUEUE) this.device.kick(RX_QUEUE);
              return null;
            });
          break;
        case Req.GET_CONFIG:
          result = this.getConfig(p);
          explicit = result === null;
          break;
        case Req.SET_CONFIG:
        case Req.NET_SET_MTU:
        case Req.SEND_RARP:
          break;
        case Req.SET_LOG_BASE:
        case Req.SET_LOG_FD:
          result = 'dirty-page logging (migration) is not supported';
          break;
        default:
          if (!this.unknownSeen.has(req)) {
            this.unknownSeen.add(req);
            log.warn({ connection: this.name, request: req }, `vhost-user ${this.name}: unsupported message ${requestName(req)}`);
          }
          result = `unsupported message ${requestName(req)}`;
      }
    } catch (err) {
      result = `${requestName(req)} failed: ${(err as Error).message}`;
    } finally {
      for (const f of fds) f.close(); // whatever was not taken (taken fds were replaced in the array)
    }
    if (this.closed) return;
    if (result !== null) log.warn({ connection: this.name, request: requestName(req) }, `vhost-user ${this.name}: ${result}`);
    if (needReply && !explicit) this.replyU64(req, result === null ? 0n : 1n);
  }

  private need(p: DataView, n: number): string | null {
    return p.byteLength < n ? `payload of ${p.byteLength} bytes, expected ${n}` : null;
  }

  private withQueue(p: DataView, fn: (q: number) => string | null): string | null {
    const q = p.getUint32(0, true);
    if (q > 1) return `queue ${q} does not exist (one queue pair, MQ not offered)`;
    return fn(q);
  }

  private setFeatures(f: bigint): string | null {
    const err = this.device.setDriverFeatures(f & ~bit(VHOST_USER_F_PROTOCOL_FEATURES));
    if (err) return err;
    if (!hasBit(f, VHOST_USER_F_PROTOCOL_FEATURES)) {
      // without protocol features rings are enabled as soon as they start (spec "Ring states")
      this.device.rx.enabled = true;
      this.device.tx.enabled = true;
    }
    if (!this.ready) {
      this.ready = true;
      this.emit('ready', this.device);
    }
    return null;
  }

  private resetDevice(): void {
    for (let i = 0; i < 2; i++) this.dropKick(i);
    this.device.reset();
  }

  private setMemTable(p: DataView, fds: OwnedFd[]): string | null {
    const table = decodeMemTable(p);
    if (typeof table === 'string') return table;
    if (fds.length !== table.length) return `memory table of ${table.length} regions came with ${fds.length} fds`;
    const page = pageSize();
    const regions: MemoryRegion[] = [];
    try {
      for (let i = 0; i < table.length; i++) {
        const r = table[i];
        // mmap offsets must be page aligned; the region starts `delta` bytes into the mapping
        const delta = r.mmapOffset % page;
        const ab = mmap(fds[i], r.mmapOffset - delta, r.size + delta);
        regions.push(makeRegion(r, ab, delta, () => munmap(ab)));
      }
    } catch (err) {
      for (const r of regions) r.release?.();
      return `mapping guest memory failed: ${(err as Error).message}`;
    }
    this.memory.setRegions(regions);
    log.info(
      { connection: this.name, regions: table.map((r) => ({ gpa: `0x${r.gpa.toString(16)}`, size: r.size })) },
      `vhost-user ${this.name}: guest memory mapped`,
    );
    for (const q of [this.device.rx, this.device.tx]) {
      if (q.addresses === null) continue;
      const err = q.map();
      if (err) return `queue ${q.index} after the memory change: ${err}`;
    }
    return null;
  }

  private setVringAddr(p: DataView): string | null {
    const a = decodeVringAddr(p);
    if (typeof a === 'string') return a;
    if (a.index > 1) return `queue ${a.index} does not exist`;
    const q = this.device.queue(a.index)!;
    q.setAddresses({ desc: a.desc, avail: a.avail, used: a.used, space: 'uaddr' });
    if (this.memory.regions.length === 0) return null; // mapped when the memory table arrives
    return q.map();
  }

  private setVringKick(p: DataView, fds: OwnedFd[]): string | null {
    const v = p.getUint32(0, true);
    const q = v & VHOST_USER_VRING_IDX_MASK;
    if (q > 1) return `queue ${q} does not exist`;
    this.dropKick(q);
    if ((v & VHOST_USER_VRING_NOFD_MASK) === 0) {
      const fd = fds.shift();
      if (!fd) return 'SET_VRING_KICK without a file descriptor';
      const watcher = new FdWatcher(fd, (_events, status) => {
        if (status < 0) {
          log.warn({ connection: this.name, queue: q }, `vhost-user ${this.name}: kick fd of queue ${q} failed (${status})`);
          return;
        }
        try {
          eventfdRead(fd);
          this.device.kick(q);
        } catch (err) {
          // nothing a guest does may end the process; the device model is not meant to throw
          log.error({ connection: this.name, queue: q, err: String(err) }, `vhost-user ${this.name}: queue ${q} processing failed`);
        }
      });
      watcher.start(POLL_READABLE);
      this.kicks[q] = { fd, watcher };
    } else {
      log.warn({ connection: this.name, queue: q }, `vhost-user ${this.name}: queue ${q} has no kick fd (polling mode is not supported)`);
    }
    return this.device.startQueue(q);
  }

  private setVringFd(p: DataView, fds: OwnedFd[], slot: Array<OwnedFd | null>, isCall: boolean): string | null {
    const v = p.getUint32(0, true);
    const q = v & VHOST_USER_VRING_IDX_MASK;
    if (q > 1) return `queue ${q} does not exist`;
    slot[q]?.close();
    slot[q] = null;
    if ((v & VHOST_USER_VRING_NOFD_MASK) === 0) {
      const fd = fds.shift();
      if (!fd) return 'vring fd message without a file descriptor';
      slot[q] = fd;
    }
    if (isCall) {
      const fd = slot[q];
      this.device.setNotifier(q, fd ? () => void eventfdWrite(fd, 1) : null);
    }
    return null;
  }

  private getConfig(p: DataView): string | null {
    if (p.byteLength < 12) return 'config payload too short';
    const offset = p.getUint32(0, true);
    const size = p.getUint32(4, true);
    if (size > 256 || p.byteLength < 12 + size) return `config request of ${size} bytes`;
    const out = this.reply.subarray(VHOST_USER_HDR_SIZE, VHOST_USER_HDR_SIZE + 12 + size);
    out.fill(0);
    const v = this.replyView;
    v.setUint32(VHOST_USER_HDR_SIZE, offset, true);
    v.setUint32(VHOST_USER_HDR_SIZE + 4, size, true);
    const cfg = this.device.config;
    for (let i = 0; i < size && offset + i < cfg.length; i++) out[12 + i] = cfg[offset + i];
    this.send(Req.GET_CONFIG, 12 + size);
    return null;
  }

  private dropKick(q: number): void {
    const k = this.kicks[q];
    if (!k) return;
    k.watcher.close();
    k.fd.close();
    this.kicks[q] = null;
  }

  // ---- replies ----

  private replyU64(req: number, v: bigint): void {
    writeU64(this.replyView, VHOST_USER_HDR_SIZE, v);
    this.send(req, 8);
  }

  private replyState(req: number, index: number, num: number): void {
    this.replyView.setUint32(VHOST_USER_HDR_SIZE, index, true);
    this.replyView.setUint32(VHOST_USER_HDR_SIZE + 4, num, true);
    this.send(req, 8);
  }

  private send(req: number, size: number): void {
    const v = this.replyView;
    v.setUint32(0, req, true);
    v.setUint32(4, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, true);
    v.setUint32(8, size, true);
    let n: number;
    try {
      n = sendmsg(this.socket, this.reply.subarray(0, VHOST_USER_HDR_SIZE + size));
    } catch (err) {
      this.close(`reply failed: ${(err as Error).message}`);
      return;
    }
    if (n !== VHOST_USER_HDR_SIZE + size) this.close('reply could not be written whole (peer not reading)');
  }
}
