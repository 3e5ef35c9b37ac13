/**
 * Client side of the control socket (protocol.ts): `ControlClient` keeps one connection and
 * matches responses to requests in order (the server answers each connection's requests in
 * the order they came); `controlRequest` is the one-shot form the CLI verbs use.
 *
 * A response that is not valid JSON or does not fit the response schema rejects with a
 * ControlError 'EBADRESP'; a server-side error rejects with the server's code and message;
 * the connection closing with requests outstanding rejects them with 'ECONNRESET'.
 */
import net from 'node:net';
import { ControlError, controlResponseSchema, type ControlEvent, type ControlRequest, type ControlResponse } from './protocol';

type Pending = { resolve: (v: ControlResponse) => void; reject: (e: Error) => void };

/** A request without its id (the client numbers requests itself). */
export type ControlRequestBody = ControlRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

export class ControlClient {
  private readonly queue: Pending[] = [];
  private buffered = '';
  private nextId = 1;
  private ended: Error | null = null;
  private eventHandler: ((e: ControlEvent) => void) | null = null;
  private endHandler: ((e: Error) => void) | null = null;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (text: string) => this.onData(text));
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new ControlError('ECONNRESET', 'control connection closed')));
  }

  /** Connect to the control socket at `path`. */
  static connect(path: string, timeoutMs = 5000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new ControlError('ETIMEDOUT', `no answer from control socket ${path}`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new ControlClient(sock));
      });
      sock.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new ControlError(err.code ?? 'ECONNREFUSED', `cannot connect to control socket ${path}: ${err.message}`));
      });
    });
  }

  /** Send one request; resolves with the result or rejects with the server's error. */
  async request(body: ControlRequestBody): Promise<unknown> {
    const r = await this.send(JSON.stringify({ id: this.nextId++, ...body }));
    if (r.ok) return r.result;
    throw new ControlError(r.error.code, r.error.message);
  }

  /** Receive the unsolicited event lines of a stream (`trace`). */
  onEvent(handler: (e: ControlEvent) => void): void {
    this.eventHandler = handler;
  }

  /** Called once when the connection ends (closed by the server, or failed). */
  onEnd(handler: (e: Error) => void): void {
    this.endHandler = handler;
    if (this.ended) handler(this.ended);
  }

  /** Send a raw line (tests use this for malformed requests); resolves with the whole response. */
  raw(line: string): Promise<ControlResponse> {
    return this.send(line.replace(/\n$/, ''));
  }

  private send(line: string): Promise<ControlResponse> {
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve, reject });
      this.sock.write(line + '\n');
    });
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  private onData(text: string): void {
    this.buffered += text;
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (line.startsWith('{"event":')) {
        try {
          this.eventHandler?.(JSON.parse(line) as ControlEvent);
        } catch {
          /* a malformed event is skipped */
        }
        continue;
      }
      const waiter = this.queue.shift();
      if (!waiter) continue; // unsolicited: ignore
      let parsed;
      try {
        parsed = controlResponseSchema.safeParse(JSON.parse(line));
      } catch {
        waiter.reject(new ControlError('EBADRESP', 'control response is not JSON'));
        continue;
      }
      if (!parsed.success) waiter.reject(new ControlError('EBADRESP', 'control response has the wrong shape'));
      else waiter.resolve(parsed.data as ControlResponse);
    }
  }

  private fail(err: Error): void {
    const first = !this.ended;
    if (!this.ended) this.ended = err instanceof ControlError ? err : new ControlError('ECONNRESET', err.message);
    for (const w of this.queue.splice(0)) w.reject(this.ended);
    if (first) this.endHandler?.(this.ended);
  }
}

/** Connect, send one request, return its result, close. */
export async function controlRequest(path: string, body: ControlRequestBody, timeoutMs = 10_000): Promise<unknown> {
  const client = await ControlClient.connect(path, timeoutMs);
  try {
    let timer: NodeJS.Timeout | undefined;
    return await Promise.race([
      client.request(body),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ControlError('ETIMEDOUT', `control request ${body.cmd} timed out`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  } finally {
    client.close();
  }
}
