/**
 * QEMU's own NIC models on usernet through `-netdev stream` (unix socket, usernet listening):
 * the test guest's 8139too driver on QEMU's rtl8139, and its virtio-net driver on QEMU's
 * virtio-net (frames, not rings, cross the socket). Each gets a DHCP lease from the NAT stack,
 * pings the gateway, resolves a name and fetches a file over HTTP with the right sha256.
 * Also `-netdev dgram` with the rtl8139.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Meter } from '../../src/meter/meter';
import { listenQemuStream, openQemuDgram, qemuDgramArgs, qemuStreamArgs, type QemuStreamPort } from '../../src/transports/qemu-socket';
import { runGuest } from '../../src/vm';
import { testIf } from '../helpers/env';
import { checkCommand, fileServer, natBehind, parseFacts } from './vhost-user-rig';

const vmTest = testIf('root', 'qemu');

for (const model of ['rtl8139', 'virtio-net-pci']) {
  vmTest.serial(`-netdev stream with QEMU's ${model}: lease, ping, DNS, HTTP fetch`, async (t) => {
    const files = await fileServer(2 << 20);
    const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-qs-'));
    const meter = new Meter();
    const server = await listenQemuStream({ address: { type: 'unix', path: join(dir, 'stream.sock') }, meter });
    server.on('guest', (port: QemuStreamPort) => void natBehind(port, meter));
    t.teardown(async () => {
      await server.close();
      await files.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const r = await runGuest({ network: qemuStreamArgs(server.address, { model }), command: checkCommand(files.port), timeoutMs: 180_000, console: true });
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output + r.stderr);
    const facts = parseFacts(r.output);
    t.is(facts.addr, '10.0.2.15/24');
    t.is(facts.ping, 'ok');
    t.is(facts.resolved, '10.0.2.2');
    t.is(facts.sha256, files.sha256);
    const s = meter.stage('qemu.stream.read').snapshot();
    t.true(s.frames > 0);
  });
}

vmTest.serial('-netdev dgram with QEMU\'s rtl8139: lease, ping, DNS, HTTP fetch', async (t) => {
  const files = await fileServer(1 << 20);
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-qd-'));
  const meter = new Meter();
  const ours = join(dir, 'usernet.sock');
  const theirs = join(dir, 'qemu.sock');
  const port = openQemuDgram({ path: ours, peer: theirs, meter });
  await natBehind(port, meter);
  t.teardown(async () => {
    await port.close();
    await files.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const r = await runGuest({ network: qemuDgramArgs(ours, theirs, { model: 'rtl8139' }), command: checkCommand(files.port), timeoutMs: 180_000 });
  t.is(r.exitCode, 0, r.output + r.stderr);
  t.is(parseFacts(r.output).sha256, files.sha256);
});
