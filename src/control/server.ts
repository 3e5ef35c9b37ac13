/**
 * The control socket server (protocol in protocol.ts). One unix stream socket, any number of
 * clients, JSON lines both ways; requests on one connection are answered in order (each is
 * handled after the previous one's promise settled).
 *
 * Robustness: every line is parsed and validated before a handler sees it; a handler that
 * throws or rejects produces an error response (its `code` property is kept when it has one);
 * a line longer than MAX_REQUEST_LINE gets an error and the connection is closed; socket errors
 * of one client only end that client. Nothing a client sends can throw out of the server.
 *
 * Lifetime: `listen` refuses to replace a path that is not a socket, or a socket another
 * process still listens on; a stale socket (nobody listening: ECONNREFUSED) is removed first.
 * The socket file is made 0600 (the control socket changes port forwards: owner only).
 * `close()` stops listening, ends every client, and unlinks the path.
 */
import net from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { log } from '../log';
import {
  MAX_REQUEST_LINE,
  controlRequestSchema,
  type ControlCommand,
  type ControlEvent,
  type ControlRequest,
  type ControlResponse,
  type OptionalControlCommand,
} from './protocol';

/**
 * The connection a request came on, for commands that stream (`trace`): `push` sends an event
 * line (dropped and counted when the client reads too slowly — more than MAX_PENDING_BYTES
 * waiting), `onClose` runs when the connection ends.
 */
export interface ControlSession {
  push(event: ControlEvent): boolean;
  onClose(fn: () => void): void;
  /** Events dropped because the client was behind. */
  readonly dropped: number;
  readonly closed: boolean;
}

type Handler<K extends ControlCommand> = (req: Extract<ControlRequest, { cmd: K }>, session: ControlSession) => unknown;

export type ControlHandlers = {
  [K in Exclude<ControlCommand, OptionalControlCommand>]: Handler<K>;
} & {
  [K in OptionalControlCommand]?: Handler<K>;
};

/** Bytes of unsent event lines a slow client may have before further events are dropped. */
const MAX_PENDING_BYTES = 4 << 20;

export interface ControlServerOptions {
  /** Closing the server when this aborts. */
  signal?: AbortSignal;
}

type Id = string | number | null;

function errorResponse(id: Id, code: string, message: string): ControlResponse {
  return { id, ok: false, error: { code, message } };
}

/** Remove `path` if it is a socket nobody listens on; throw if it is something else or alive. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) {
    throw Object.assign(new Error(`control path ${path} exists and is not a socket`), { code: 'EEXIST' });
  }
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw Object.assign(new Error(`another process listens on ${path}`), { code: 'EADDRINUSE' });
  await unlink(path);
}

export class ControlServer {
  private readonly clients = new Set<net.Socket>();
  private closed = false;
  private signal: AbortSignal | null = null;
  private readonly onAbort = (): void => void this.close();

  private constructor(
    readonly path: string,
    private readonly server: net.Server,
    private readonly handlers: ControlHandlers,
  ) {}

  static async listen(path: string, handlers: ControlHandlers, options: ControlServerOptions = {}): Promise<ControlServer> {
    await clearStaleSocket(path);
    const server = net.createServer();
    const self = new ControlServer(path, server, handlers);
    server.on('connection', (sock) => self.accept(sock));
    server.on('error', (err) => log.warn({ err: err.message }, 'control socket error'));
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => reject(err);
      server.once('error', fail);
      server.listen(path, () => {
        server.off('error', fail);
        resolve();
      });
    });
    await chmod(path, 0o600).catch(() => {});
    if (options.signal) {
      if (options.signal.aborted) {
        await self.close();
      } else {
        self.signal = options.signal;
        options.signal.addEventListener('abort', self.onAbort, { once: true });
      }
    }
    return self;
  }

  private accept(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    this.clients.add(sock);
    let pending: Buffer[] = [];
    let pendingLength = 0;
    let chain: Promise<void> = Promise.resolve();
    const reply = (r: ControlResponse): void => {
      if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(r) + '\n');
    };
    const closers: (() => void)[] = [];
    const session = {
      dropped: 0,
      closed: false,
      push(event: ControlEvent): boolean {
        if (session.closed || sock.destroyed || !sock.writable) return false;
        if (sock.writableLength > MAX_PENDING_BYTES) {
          session.dropped++;
          return false;
        }
        sock.write(JSON.stringify(event) + '\n');
        return true;
      },
      onClose(fn: () => void): void {
        if (session.closed) fn();
        else closers.push(fn);
      },
    };
    sock.on('data', (chunk: Buffer) => {
      let start = 0;
      for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
        const part = chunk.subarray(start, nl);
        let line: string;
        if (pendingLength > 0) {
          pending.push(part);
          line = Buffer.concat(pending, pendingLength + part.length).toString('utf8');
          pending = [];
          pendingLength = 0;
        } else {
          line = part.toString('utf8');
        }
        start = nl + 1;
        if (line.length > MAX_REQUEST_LINE) {
          reply(errorResponse(null, 'EBADREQ', `request longer than ${MAX_REQUEST_LINE} bytes`));
          sock.end();
          return;
        }
        if (line.trim() === '') continue;
        chain = chain.then(() => this.handle(line, session).then(reply));
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start));
        pendingLength += chunk.length - start;
        if (pendingLength > MAX_REQUEST_LINE) {
          reply(errorResponse(null, 'EBADREQ', `request longer than ${MAX_REQUEST_LINE} bytes`));
          pending = [];
          pendingLength = 0;
          sock.end();
        }
      }
    });
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      this.clients.delete(sock);
      session.closed = true;
      for (const fn of closers.splice(0)) {
        try {
          fn();
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'control session cleanup failed');
        }
      }
    });
  }

  /** Parse, validate and run one request line; always resolves to a response. */
  private async handle(line: string, session: ControlSession): Promise<ControlResponse> {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return errorResponse(null, 'EBADREQ', 'request is not valid JSON');
    }
    const rawId = typeof raw === 'object' && raw !== null ? (raw as { id?: unknown }).id : undefined;
    const id: Id = typeof rawId === 'string' || typeof rawId === 'number' ? rawId : null;
    const parsed = controlRequestSchema.safeParse(raw);
    if (!parsed.success) {
      const msg = parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ');
      return errorResponse(id, 'EBADREQ', msg);
    }
    const req = parsed.data;
    try {
      const handler = this.handlers[req.cmd] as ((r: ControlRequest, s: ControlSession) => unknown) | undefined;
      if (!handler) return errorResponse(id, 'ENOTSUP', `this instance does not serve ${req.cmd}`);
      const result = await handler(req, session);
      return { id, ok: true, result: result === undefined ? null : result };
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      const code = typeof e?.code === 'string' ? e.code : 'EINTERNAL';
      const message = typeof e?.message === 'string' ? e.message : String(err);
      if (code === 'EINTERNAL') log.warn({ cmd: req.cmd, err: message }, 'control command failed');
      return errorResponse(id, code, message);
    }
  }

  /** Stop listening, end every client, remove the socket file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const c of this.clients) c.destroy();
    this.clients.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await unlink(this.path).catch(() => {});
  }
}
