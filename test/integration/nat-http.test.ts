/**
 * Real clients through usernet's NAT: the Linux kernel in a network namespace is the guest,
 * curl its application. 100 MiB each way through the gateway address 10.0.2.2 (which reaches
 * the host's 127.0.0.1) and the sha256 of what arrived must match what was sent.
 */
import { mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testIf } from '../helpers/env';
import { withNatGuest } from '../helpers/nat-guest';
import { expectedSha256, startBlobServer, writePattern } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun', 'cmd:curl');
const SIZE = 100 * 1024 * 1024;

test('curl downloads 100 MiB from the host loopback through 10.0.2.2; sha256 matches', async (t) => {
  const server = await startBlobServer();
  t.teardown(() => server.close());
  await withNatGuest({}, async (g) => {
    const r = await g.sh(`curl -sS --fail --max-time 240 http://10.0.2.2:${server.port}/blob/${SIZE} | sha256sum`, 300_000);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.split(' ')[0], expectedSha256(SIZE));
    const stats = (await g.ctl({ cmd: 'stats' })) as { stages: { name: string; bytes: number }[] };
    const tapWrite = stats.stages.find((s) => s.name === 'netns.tap.write');
    t.truthy(tapWrite);
    t.true((tapWrite?.bytes ?? 0) >= SIZE, 'tap.write counted at least the payload');
    const { code } = await g.stop();
    t.is(code, 0, g.stderr);
  });
});

test('curl uploads 100 MiB to the host loopback through 10.0.2.2; the server sees the same sha256', async (t) => {
  const server = await startBlobServer();
  t.teardown(() => server.close());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-upload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'blob');
  const out = createWriteStream(file);
  await writePattern(SIZE, (chunk) => new Promise<void>((resolve) => (out.write(chunk) ? resolve() : out.once('drain', resolve))));
  await new Promise<void>((resolve) => out.end(resolve));
  await withNatGuest({}, async (g) => {
    const put = await g.exec(['curl', '-sS', '--fail', '--max-time', '240', '-T', file, `http://10.0.2.2:${server.port}/upload`], 300_000);
    t.is(put.code, 0, put.stderr);
    const reply = JSON.parse(put.stdout) as { bytes: number; sha256: string };
    t.is(reply.bytes, SIZE);
    t.is(reply.sha256, expectedSha256(SIZE));
    const post = await g.exec(['curl', '-sS', '--fail', '--max-time', '240', '--data-binary', `@${file}`, `http://10.0.2.2:${server.port}/upload`], 300_000);
    t.is(post.code, 0, post.stderr);
    t.is((JSON.parse(post.stdout) as { sha256: string }).sha256, expectedSha256(SIZE));
  });
});
