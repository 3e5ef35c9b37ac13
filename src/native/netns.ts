/**
 * Creating fds inside another network namespace. A socket or tap fd belongs for life to the
 * namespace its creator was in; the addon enters the target namespace on the calling thread
 * only for the socket()/open() call and returns before any other JavaScript runs (see
 * native/src/netns.c). Every creating call in src/native takes an optional `netns`.
 *
 * A namespace is given as a name made by `ip netns add` (→ /var/run/netns/NAME), a PID
 * (→ /proc/PID/ns/net), or a path to any nsfs handle.
 */
import { addon, type OwnedFd } from './binding';

/** NAME | PID | /path → the path the addon opens; null/undefined/'' → null (stay here). */
export function netnsPath(spec: string | number | null | undefined): string | null {
  if (spec === null || spec === undefined || spec === '') return null;
  if (typeof spec === 'number' || /^\d+$/.test(spec)) return `/proc/${spec}/ns/net`;
  if (spec.includes('/')) return spec;
  return `/var/run/netns/${spec}`;
}

/**
 * socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol) created inside `netns`
 * (family/type/protocol are the AF_* / SOCK_* / IPPROTO_* numbers from constants.ts).
 */
export function socketInNetns(netns: string | number | null, family: number, type: number, protocol = 0): OwnedFd {
  return addon.socketInNetns(netnsPath(netns), family, type, protocol);
}
