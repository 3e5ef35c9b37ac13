/**
 * Socket files at a listening path: a file left by a dead process is removed so the path can be
 * bound again; a socket someone still listens on, or a file that is not a socket, is refused
 * (EADDRINUSE / EEXIST) — usernet never deletes what it cannot prove is stale. Abstract-namespace
 * names (`@…`) have no file. For datagram sockets there is no listener to probe, so an existing
 * socket file is taken as stale.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { hasCode, unixConnect } from '../native';

export function removeStaleSocket(path: string, datagram = false): void {
  if (path.startsWith('@') || !existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  if (!datagram) {
    try {
      unixConnect(path).close();
    } catch (err) {
      if (hasCode(err, 'ECONNREFUSED') || hasCode(err, 'ENOENT')) {
        unlinkSync(path);
        return;
      }
      throw err;
    }
    throw Object.assign(new Error(`${path}: another process is listening on it`), { code: 'EADDRINUSE' });
  }
  unlinkSync(path);
}
