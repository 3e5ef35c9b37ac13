/**
 * The control protocol of a running usernet (`usernet run --control PATH`): a unix stream
 * socket carrying JSON lines. Each line from the client is one request; each request gets
 * exactly one response line, in order. A client may pipeline requests and keep the connection
 * open, or send one and close.
 *
 *   → {"id":1,"cmd":"hostfwd.add","rule":"tcp:127.0.0.1:8080-:80"}
 *   ← {"id":1,"ok":true,"result":{"rule":"tcp:127.0.0.1:8080-:80", ...}}
 *   → {"cmd":"nonsense"}
 *   ← {"id":null,"ok":false,"error":{"code":"EBADREQ","message":"..."}}
 *
 * Commands: `hostfwd.add` / `hostfwd.remove` take a QEMU hostfwd rule
 * (`[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`), `hostfwd.list` returns the rules in
 * force, `stats` returns the meter snapshot (and whatever the instance adds, e.g. which ICMP
 * path it uses), `info` the instance's addresses and pid, `flows` one row per NAT flow with
 * its counters (bytes and segments each way, retransmissions, window stalls). `trace` starts a
 * stream on its connection: after its response, the server sends unsolicited lines
 *   ← {"event":"trace","record":{...}}         one per packet journey (meter/trace.ts)
 *   ← {"event":"trace-end","reason":"count"}   after `count` records (if given)
 * until the client closes the connection. Requests are validated with zod;
 * anything malformed (not JSON, unknown command, missing field, over-long line) gets an error
 * response — a bad client never takes the server down.
 */
import { z } from 'zod';

/** Longest request line accepted (bytes). A longer line is answered with an error and the connection closed. */
export const MAX_REQUEST_LINE = 64 * 1024;

const id = z.union([z.string().max(256), z.number(), z.null()]).optional();

export const controlRequestSchema = z.discriminatedUnion('cmd', [
  z.object({ id, cmd: z.literal('hostfwd.add'), rule: z.string().min(1).max(512) }),
  z.object({ id, cmd: z.literal('hostfwd.remove'), rule: z.string().min(1).max(512) }),
  z.object({ id, cmd: z.literal('hostfwd.list') }),
  z.object({ id, cmd: z.literal('stats'), reset: z.boolean().optional() }),
  z.object({ id, cmd: z.literal('info') }),
  z.object({ id, cmd: z.literal('flows') }),
  z.object({
    id,
    cmd: z.literal('trace'),
    proto: z.enum(['tcp', 'udp', 'icmp', 'arp']).optional(),
    port: z.number().int().min(0).max(65535).optional(),
    address: z.string().max(64).optional(),
    dir: z.enum(['tx', 'rx']).optional(),
    path: z.enum(['nat', 'bridged', 'local', 'link']).optional(),
    sample: z.number().int().min(1).max(1_000_000).optional(),
    payloadOnly: z.boolean().optional(),
    count: z.number().int().min(1).optional(),
  }),
]);

/** Commands an instance may leave out (answered ENOTSUP): the meter views. */
export type OptionalControlCommand = 'flows' | 'trace';

/** An unsolicited line on a connection that asked for a stream (`trace`). */
export interface ControlEvent {
  event: string;
  [k: string]: unknown;
}

export type ControlRequest = z.infer<typeof controlRequestSchema>;
export type ControlCommand = ControlRequest['cmd'];

export interface ControlErrorBody {
  /** A short machine-readable code: EBADREQ (malformed request), EINVAL (bad argument), ENOENT, EEXIST, EINTERNAL, or an errno code from the host. */
  code: string;
  message: string;
}

export type ControlResponse =
  | { id: string | number | null; ok: true; result: unknown }
  | { id: string | number | null; ok: false; error: ControlErrorBody };

/** Response schema, used by the client to check what it reads. */
export const controlResponseSchema = z.union([
  z.object({ id: z.union([z.string(), z.number(), z.null()]), ok: z.literal(true), result: z.unknown() }),
  z.object({
    id: z.union([z.string(), z.number(), z.null()]),
    ok: z.literal(false),
    error: z.object({ code: z.string(), message: z.string() }),
  }),
]);

/** An error reported by the server (or by the client when the reply is malformed). */
export class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}
