/**
 * The native addon's TypeScript face: only the Linux facilities Node lacks, each a thin typed
 * wrapper over one C call (native/src/*.c). Import as `import * as native from '../native'`.
 *
 *   fd.ts        OwnedFd, adoptFd, setNonBlocking, nativeStats
 *   watcher.ts   FdWatcher (uv_poll readiness), POLL_*
 *   io.ts        read/write/readv/writev, readFrames/writeFrames (batched), FrameSlab
 *   tap.ts       openTap and the tun ioctls
 *   unix.ts      AF_UNIX listen/accept/connect/dgram/socketpair, sendmsg/recvmsg with fds
 *   mmap.ts      mmap/munmap, memfdCreate, eventfd
 *   sockets.ts   ICMP echo / UDP / TCP sockets, TTL, error queue
 *   netns.ts     netnsPath, socketInNetns
 *   errors.ts    errnoName, errnoError, Errno
 *   constants.ts AF_*, SOCK_*, IPPROTO_*, IP_*, IPV6_*, IFF_*, TUN_F_*, MSG_*, SO_EE_ORIGIN_*
 */
export * from './constants';
export * from './errors';
export * from './fd';
export * from './io';
export * from './mmap';
export * from './netns';
export * from './sockets';
export * from './tap';
export * from './unix';
export * from './watcher';
export { addonLoadError, addonPath } from './binding';
