/**
 * UnixDeviceServer: the listening side shared by the transports where QEMU connects to usernet
 * over a unix stream socket to reach one emulated device (vhost-user, vfio-user).
 *
 * One connection at a time per socket (one socket = one device of one VM); one process serves
 * several VMs with one server per path. A connection that arrives while another is alive is
 * refused with a log line — after `pump()`ing the old one, since QEMU reconnecting after being
 * killed races with our noticing its EOF. Each accepted connection gets a fresh device (made by
 * the subclass's `connect`); the subclass turns the connection's own events into 'guest' /
 * 'disconnect'. A stale socket file left by a dead process is replaced; anything else at the
 * path is refused.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { log } from '../log';
import { FdWatcher, POLL_READABLE, unixAccept, unixListen, type OwnedFd } from '../native';
import { removeStaleSocket } from './stale-socket';

/** What the server needs of a protocol connection. */
export interface DeviceConnection extends EventEmitter {
  readonly closed: boolean;
  /** Process whatever is readable now (notices an EOF not yet seen). */
  pump(): void;
  close(reason: string): void;
}

export abstract class UnixDeviceServer<C extends DeviceConnection> extends EventEmitter {
  /** The live connection, if any. */
  connection: C | null = null;
  private listenFd: OwnedFd | null = null;
  private watcher: FdWatcher | null = null;
  private serial = 0;
  private closed = false;

  constructor(
    readonly path: string,
    readonly name: string,
    /** Protocol name for log lines ("vhost-user", "vfio-user"). */
    private readonly protocol: string,
  ) {
    super();
  }

  /** Make the protocol connection for an accepted fd (may throw: the fd is then closed). */
  protected abstract connect(fd: OwnedFd, name: string): C;

  /** Wire the connection's events to this server's 'guest' / 'disconnect'. */
  protected abstract announce(conn: C): void;

  /** Create the socket and start accepting. */
  async listen(): Promise<this> {
    if (this.listenFd) return this;
    removeStaleSocket(this.path);
    this.listenFd = unixListen(this.path, { backlog: 4 });
    this.watcher = new FdWatcher(this.listenFd, () => this.acceptAll());
    this.watcher.start(POLL_READABLE);
    log.info({ path: this.path }, `${this.protocol}: listening on ${this.path}`);
    return this;
  }

  /** Stop listening, drop the connection (its device closes), remove the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.listenFd?.close();
    this.listenFd = null;
    this.connection?.close('server closing');
    this.connection = null;
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }

  private acceptAll(): void {
    for (;;) {
      let fd: OwnedFd | null;
      try {
        fd = this.listenFd ? unixAccept(this.listenFd) : null;
      } catch (err) {
        log.warn({ path: this.path, err: (err as Error).message }, `${this.protocol}: accept failed`);
        return;
      }
      if (!fd) return;
      const current = this.connection;
      if (current && !current.closed) current.pump(); // notice an EOF not yet seen
      if (this.connection && !this.connection.closed) {
        log.warn({ path: this.path }, `${this.protocol} ${this.name}: refusing a second connection while one is active`);
        fd.close();
        continue;
      }
      this.attach(fd);
    }
  }

  private attach(fd: OwnedFd): void {
    const name = `${this.name}#${++this.serial}`;
    let conn: C;
    try {
      conn = this.connect(fd, name);
    } catch (err) {
      log.error({ path: this.path, err: (err as Error).message }, `${this.protocol}: cannot set up the connection`);
      fd.close();
      return;
    }
    this.connection = conn;
    log.info({ connection: name }, `${this.protocol} ${name}: client connected`);
    conn.once('close', () => {
      if (this.connection === conn) this.connection = null;
    });
    this.announce(conn);
  }
}
