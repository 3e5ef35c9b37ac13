/**
 * NFSv3 reads from the test guest (kernel NFS client, busybox mount with explicit options) off
 * nfs-ganesha (src/vm/nfs-server.ts): through usernet's NAT (virtio over vhost-user; the server
 * on the host's 127.0.0.1, reached at the gateway 10.0.2.2 from an unprivileged host port, so
 * the export is `insecure`) and on the bridged test network (the server in its namespace on
 * 10.0.3.1). A 16 MiB file each time, its sha256 checked in the guest; and one NFSv4.1 mount
 * through the NAT.
 */
import { runGuestOnUsernet } from '../../src/cli/vm-session';
import { Meter } from '../../src/meter/meter';
import { guestNfsReadCommand, parseGuestNfsRead, startNfsServer, type NfsServer } from '../../src/vm/nfs-server';
import { testIf } from '../helpers/env';

const vmTest = testIf('root', 'qemu', 'cmd:ganesha.nfsd', 'cmd:rpcbind');
const SIZE = 16 << 20;

vmTest.serial('NFSv3 read of 16 MiB through usernet NAT (virtio, vhost-user): sha256 matches', async (t) => {
  const nfs = await startNfsServer({ files: [{ name: 'blob', size: SIZE }] });
  t.teardown(() => nfs.stop());
  const r = await runGuestOnUsernet({
    nic: 'virtio',
    net: 'nat',
    meter: new Meter(),
    command: (network) => guestNfsReadCommand({ server: network.hostAddress, nfsPort: nfs.nfsPort, mountPort: nfs.mountPort, exportPath: nfs.exportPath, file: 'blob' }),
    timeoutMs: 180_000,
  });
  const res = parseGuestNfsRead(r.output);
  t.log(`NAT: ${res.seconds?.toFixed(2)} s for 16 MiB`);
  t.is(res.failed, undefined, r.output);
  t.is(res.sha256, nfs.files[0].sha256, r.output);
});

vmTest.serial('NFSv4.1 read of 4 MiB through usernet NAT: sha256 matches', async (t) => {
  const nfs = await startNfsServer({ files: [{ name: 'small', size: 4 << 20 }] });
  t.teardown(() => nfs.stop());
  const r = await runGuestOnUsernet({
    nic: 'virtio',
    net: 'nat',
    meter: new Meter(),
    command: (network) => guestNfsReadCommand({ server: network.hostAddress, nfsPort: nfs.nfsPort, mountPort: nfs.mountPort, exportPath: nfs.exportPath, file: 'small', version: 4.1 }),
    timeoutMs: 180_000,
  });
  const res = parseGuestNfsRead(r.output);
  t.is(res.failed, undefined, r.output);
  t.is(res.sha256, nfs.files[0].sha256, r.output);
});

vmTest.serial('NFSv3 read of 16 MiB on the bridged network (server in its namespace on 10.0.3.1): sha256 matches', async (t) => {
  let nfs: NfsServer | null = null;
  t.teardown(async () => {
    await nfs?.stop();
  });
  const r = await runGuestOnUsernet({
    nic: 'virtio',
    net: 'bridged',
    meter: new Meter(),
    bridged: { httpFileBytes: 0, iperfServers: 0, label: 'nfs' },
    command: async (network) => {
      nfs = await startNfsServer({ files: [{ name: 'blob', size: SIZE }], netns: network.netns, address: network.hostAddress });
      return guestNfsReadCommand({ server: network.hostAddress, nfsPort: nfs.nfsPort, mountPort: nfs.mountPort, exportPath: nfs.exportPath, file: 'blob' });
    },
    timeoutMs: 180_000,
  });
  const res = parseGuestNfsRead(r.output);
  t.log(`bridged: ${res.seconds?.toFixed(2)} s for 16 MiB`);
  t.is(res.failed, undefined, r.output);
  t.truthy(nfs);
  t.is(res.sha256, nfs!.files[0].sha256, r.output);
});
