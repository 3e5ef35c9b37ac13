/**
 * The bridged test network for tests, the demo and the benchmarks (the builder itself is
 * src/vm/bridged-net.ts, shared with `usernet vm --net bridged`):
 *
 *   await withBridgedNet(async (net) => {
 *     const tap = await net.openTap({ meter });       // usernet's tap, created inside net.netns, on br0
 *     net.hostAddress;                                // 10.0.3.1 — the host side (the bridge)
 *     net.guestAddress(0), net.guestAddress(1);       // 10.0.3.10/24, 10.0.3.11/24
 *     net.http.url, net.http.sha256; net.iperfPorts;  // servers on the host side
 *   }, { iperfServers: 2 });
 *
 * Choice: the tap is created by usernet's TapBackend inside the namespace (the addon's netns
 * option) and then enslaved to the bridge, so the device never exists outside the namespace
 * and disappears when usernet closes it; a tap QEMU made itself (`-netdev tap`) is moved in
 * with `net.adopt(name)`. Everything — servers, taps, the namespace — is gone when the callback
 * ends, on success, throw or timeout, and when the test process exits.
 */
import { BridgedNetwork, type BridgedNetworkOptions } from '../../src/vm/bridged-net';

export { BridgedNetwork, type BridgedNetworkOptions };

/** Build the network, run `fn`, always tear it down. Optional overall timeout. */
export async function withBridgedNet<T>(fn: (net: BridgedNetwork) => Promise<T>, opts: BridgedNetworkOptions & { timeoutMs?: number } = {}): Promise<T> {
  const net = await BridgedNetwork.create(opts);
  let timer: NodeJS.Timeout | undefined;
  try {
    if (opts.timeoutMs && opts.timeoutMs > 0) {
      return await Promise.race([
        fn(net),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`bridged network timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
        }),
      ]);
    }
    return await fn(net);
  } finally {
    if (timer) clearTimeout(timer);
    await net.destroy();
  }
}

/** True when no namespace made by this process for a bridged network is left. */
export async function noBridgedNamespacesLeft(): Promise<boolean> {
  const { execFileSync } = await import('node:child_process');
  const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return !list.split('\n').some((l) => l.startsWith(`un-br-${process.pid}-`));
}
