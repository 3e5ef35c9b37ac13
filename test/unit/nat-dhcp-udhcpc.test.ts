/**
 * The DHCP server against a real client: busybox udhcpc in a network namespace, on a tap served
 * in-process by the netns transport joined to a NatStack. Lease, renewal (SIGUSR1: a unicast
 * REQUEST from the leased address), release (SIGUSR2), with and without checksum offload.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { NatStack } from '../../src/backends/nat/stack';
import { join } from '../../src/link/port';
import { Meter } from '../../src/meter/meter';
import { NetnsTapPort } from '../../src/transports/netns-tap';

const test = testIf('root', 'netns', 'tun', 'cmd:busybox');

const SCRIPT = `#!/bin/sh
# udhcpc hook: configure the interface and report what the server said.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route replace default via "$router" dev "$interface"
    echo "EVENT $1 ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid"
    ;;
  *) echo "EVENT $1" ;;
esac
`;

function lines(child: ChildProcess): { text: () => string; wait: (re: RegExp, ms?: number) => Promise<RegExpExecArray> } {
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return {
    text: () => out,
    wait: async (re, ms = 15000) => {
      const end = Date.now() + ms;
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (Date.now() > end) throw new Error(`udhcpc did not print ${re}; output:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

for (const offload of [false, true]) {
  test(`busybox udhcpc gets a lease, renews and releases (checksum offload ${offload ? 'on' : 'off'})`, async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-udhcpc-'));
    const script = path.join(dir, 'hook.sh');
    writeFileSync(script, SCRIPT, { mode: 0o755 });
    try {
      await withSandbox(async (sb) => {
        const ns = await sb.netns('dhcp');
        const meter = new Meter();
        const tap = NetnsTapPort.open({ netns: ns, ifName: 'tap0', meter });
        const stack = new NatStack({ meter, resolvConf: '/nonexistent', config: { mtu: 1400, leaseTime: 120 } });
        stack.setOffloads(offload, false);
        join(tap, stack);
        sb.defer(async () => {
          await stack.close();
          await tap.close();
        });
        await sb.must(['ip', 'link', 'set', 'tap0', 'up'], ns);

        const child = sb.spawn(ns, ['busybox', 'udhcpc', '-i', 'tap0', '-f', '-t', '5', '-T', '1', '-O', 'mtu', '-s', script]);
        const out = lines(child);
        const bound = await out.wait(/EVENT bound (.*)/);
        t.regex(bound[1], /ip=10\.0\.2\.15 /);
        t.regex(bound[1], /mask=24 /);
        t.regex(bound[1], /router=10\.0\.2\.2 /);
        t.regex(bound[1], /dns=10\.0\.2\.3 /);
        t.regex(bound[1], /mtu=1400 /);
        t.regex(bound[1], /lease=120 /);
        t.regex(bound[1], /serverid=10\.0\.2\.2/);
        t.is(stack.guestAddress(), '10.0.2.15');

        // Renewal: a unicast REQUEST from 10.0.2.15 to the server (RENEWING state).
        const before = meter.stage('nat.dhcp').frames;
        process.kill(child.pid!, 'SIGUSR1');
        await out.wait(/EVENT renew ip=10\.0\.2\.15/);
        t.true(meter.stage('nat.dhcp').frames > before);

        // Release: the lease is gone on our side.
        process.kill(child.pid!, 'SIGUSR2');
        await out.wait(/EVENT deconfig/);
        for (let i = 0; i < 100 && stack.guestAddress() !== null; i++) await new Promise((r) => setTimeout(r, 20));
        t.is(stack.guestAddress(), null);
        child.kill('SIGTERM');
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
