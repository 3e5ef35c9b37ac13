/**
 * `usernet run --pcap FILE`: the guest-side frames are captured, and the file is readable by
 * tcpdump after usernet stops (the writer is flushed on shutdown). Also `usernet ctl info`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { testIf } from '../helpers/env';
import { withNatGuest } from '../helpers/nat-guest';

const test = testIf('root', 'netns', 'tun', 'cmd:tcpdump', 'cmd:ping');

function tcpdump(file: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('tcpdump', ['-nn', '-r', file], { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? 1 : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

for (const ext of ['pcap', 'pcapng']) {
  test(`--pcap FILE.${ext} captures the guest side; tcpdump reads it after shutdown`, async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-pcap-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, `guest.${ext}`);
    await withNatGuest({ args: ['--pcap', file] }, async (g) => {
      const r = await g.exec(['ping', '-c', '2', '-i', '0.3', '-W', '5', '10.0.2.2']);
      t.is(r.code, 0, r.stdout + r.stderr);
      const info = (await g.ctl({ cmd: 'info' })) as { gateway: string; mtu: number; frontend: { ifName: string } };
      t.is(info.gateway, '10.0.2.2');
      t.is(info.mtu, 65520);
      t.is(info.frontend.ifName, 'tap0');
      const { code } = await g.stop();
      t.is(code, 0, g.stderr);
    });
    const d = await tcpdump(file);
    t.is(d.code, 0, d.stderr);
    const requests = d.stdout.split('\n').filter((l) => /10\.0\.2\.15 > 10\.0\.2\.2: ICMP echo request/.test(l));
    const replies = d.stdout.split('\n').filter((l) => /10\.0\.2\.2 > 10\.0\.2\.15: ICMP echo reply/.test(l));
    t.is(requests.length, 2, d.stdout);
    t.is(replies.length, 2, d.stdout);
  });
}
