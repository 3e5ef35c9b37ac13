/**
 * The test guest's own virtio-net driver on usernet's virtio-net ring over vhost-user (QEMU 7.2,
 * TCG, guest RAM a shared memfd): DHCP lease from the NAT stack, ping to the gateway, a name
 * resolved by usernet's DNS, a 4 MiB file fetched over HTTP from the host with the right sha256.
 * Then two guests on one usernet process at once, and a QEMU killed mid-transfer (its port and
 * NAT flows go, the next VM is served).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VirtioNetDevice } from '../../src/devices/virtio/net-device';
import { Meter } from '../../src/meter/meter';
import { listenVhostUser, type VhostUserServer } from '../../src/transports/vhost-user';
import { runGuest } from '../../src/vm';
import { testIf } from '../helpers/env';
import { checkCommand, fileServer, natBehind, parseFacts, vhostUserNicArgs } from './vhost-user-rig';

const vmTest = testIf('root', 'qemu');

async function usernet(t: { teardown(f: () => Promise<void>): void }, name = 'vu.sock'): Promise<{ server: VhostUserServer; path: string; meter: Meter }> {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-vu-'));
  const path = join(dir, name);
  const meter = new Meter();
  const server = await listenVhostUser({ path, meter });
  server.on('guest', (port: VirtioNetDevice) => void natBehind(port, meter));
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, path, meter };
}

vmTest.serial('vhost-user: DHCP lease, ping, DNS and a 4 MiB HTTP fetch with the right sha256', async (t) => {
  const files = await fileServer();
  t.teardown(() => files.close());
  const { server, path, meter } = await usernet(t);
  let offloads: unknown = null;
  server.once('guest', (port: VirtioNetDevice) => (offloads = port.offloads));
  const r = await runGuest({ network: vhostUserNicArgs(path), memfd: true, command: checkCommand(files.port), timeoutMs: 180_000, console: true });
  t.log(r.output.trim());
  t.is(r.exitCode, 0, r.output + r.stderr);
  const facts = parseFacts(r.output);
  t.is(facts.addr, '10.0.2.15/24');
  t.is(facts.ping, 'ok');
  t.is(facts.resolved, '10.0.2.2');
  t.is(facts.sha256, files.sha256);
  t.like(offloads, { guestCsum: true, guestTso4: true, hostTso4: true, mergeableRx: true });
  const tx = meter.stage('guest.tx').snapshot();
  const rx = meter.stage('guest.rx').snapshot();
  t.log(`guest.tx ${tx.frames} frames ${tx.bytes} B, guest.rx ${rx.frames} frames ${rx.bytes} B, dma copies ${meter.stage('device.dma.tx').copies} tx, ${meter.stage('device.dma.rx').copies} rx`);
  t.true(rx.bytes >= files.size);
});

vmTest.serial('vhost-user: two guests on one usernet process at once', async (t) => {
  const files = await fileServer(1 << 20);
  t.teardown(() => files.close());
  const a = await usernet(t, 'a.sock');
  const b = await usernet(t, 'b.sock');
  const [ra, rb] = await Promise.all(
    [a, b].map((u, i) =>
      runGuest({
        network: vhostUserNicArgs(u.path, { mac: `52:54:00:12:34:5${i}` }),
        memfd: true,
        command: checkCommand(files.port),
        timeoutMs: 240_000,
      }),
    ),
  );
  for (const r of [ra, rb]) {
    t.is(r.exitCode, 0, r.output);
    t.is(parseFacts(r.output).sha256, files.sha256);
  }
});

vmTest.serial('vhost-user: QEMU killed mid-transfer — its port closes, its host flows end, the next VM is served', async (t) => {
  const files = await fileServer(1 << 20);
  t.teardown(() => files.close());
  const { server, path } = await usernet(t);
  let firstPort: VirtioNetDevice | null = null;
  let closed = false;
  server.once('guest', (p: VirtioNetDevice) => {
    firstPort = p;
    p.once('close', () => (closed = true));
  });
  const ac = new AbortController();
  let openDuringTransfer = 0;
  await t.throwsAsync(
    runGuest({
      network: vhostUserNicArgs(path),
      memfd: true,
      command: `echo go; wget -q -O /dev/null http://10.0.2.2:${files.port}/endless; echo done`,
      timeoutMs: 180_000,
      signal: ac.signal,
      onLine: (line) => {
        if (line === 'go')
          setTimeout(() => {
            openDuringTransfer = files.open;
            ac.abort(); // the launcher kills QEMU
          }, 3000);
      },
    }),
  );
  t.is(openDuringTransfer, 1, 'the transfer was running when QEMU was killed');
  t.truthy(firstPort);
  await waitFor(() => closed, 'the port to close');
  await waitFor(() => files.open === 0, 'the host side of the flow to close');
  const r = await runGuest({ network: vhostUserNicArgs(path), memfd: true, command: checkCommand(files.port), timeoutMs: 180_000 });
  t.is(r.exitCode, 0, r.output);
  t.is(parseFacts(r.output).sha256, files.sha256);
});

function waitFor(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (cond()) resolve();
      else if (Date.now() - started > ms) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(check, 20);
    };
    check();
  });
}

vmTest.serial('vhost-user: usernet restarted under a running guest — QEMU (reconnect=1) re-negotiates and traffic resumes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-vu-'));
  const path = join(dir, 'vu.sock');
  const meter = new Meter();
  let server = await listenVhostUser({ path, meter });
  server.on('guest', (port: VirtioNetDevice) => void natBehind(port, meter));
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let guests = 0;
  const count = (): void => void guests++;
  server.on('guest', count);
  const restart = async (): Promise<void> => {
    await server.close();
    server = await listenVhostUser({ path, meter });
    server.on('guest', (port: VirtioNetDevice) => void natBehind(port, meter));
    server.on('guest', count);
  };
  const r = await runGuest({
    network: vhostUserNicArgs(path, { reconnect: true }),
    memfd: true,
    command: 'ping -c 1 -W 5 10.0.2.2 >/dev/null && echo ping1=ok\necho restart-now\nsleep 8\nping -c 2 -W 5 10.0.2.2 >/dev/null && echo ping2=ok',
    timeoutMs: 180_000,
    onLine: (line) => {
      if (line === 'restart-now') void restart();
    },
  });
  const facts = parseFacts(r.output);
  t.is(facts.ping1, 'ok');
  t.is(facts.ping2, 'ok', r.output + r.stderr);
  t.is(guests, 2, 'the device was announced again on the new connection');
});
