/**
 * One logger for the process (pino, JSON lines on stderr). `logOnce` is for bad input: a
 * malformed frame or bogus message is logged the first time its kind is seen, then only counted.
 */
import pino from 'pino';

export const log = pino(
  { name: 'usernet', level: process.env.USERNET_LOG ?? (process.env.CI || process.env.AVA_PATH ? 'warn' : 'info') },
  pino.destination(2),
);

const seen = new Set<string>();

export function logOnce(key: string, msg: string, detail?: Record<string, unknown>): void {
  if (seen.has(key)) return;
  seen.add(key);
  log.warn({ ...detail, key }, msg);
}
