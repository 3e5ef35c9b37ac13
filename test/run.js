#!/usr/bin/env node
// Runs the ava suites (TypeScript through ts-node) with the TAP reporter, echoes everything,
// and closes with the one line CI reads: "N passed, N failed, N skipped".
// Usage: node test/run.js [unit|integration|vm|FILE...]   (default: all three suites)
'use strict';
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const suites = ['unit', 'integration', 'vm'];
const patterns = (args.length ? args : suites).map((a) =>
  suites.includes(a) ? `test/${a}/**/*.test.ts` : a,
);

const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
const child = spawn(process.execPath, [ava, '--tap', ...patterns], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, TS_NODE_TRANSPILE_ONLY: 'true', FORCE_COLOR: '0' },
});

let passed = 0;
let failed = 0;
let skipped = 0;
const rl = readline.createInterface({ input: child.stdout });
rl.on('line', (line) => {
  process.stdout.write(line + '\n');
  if (/^not ok \d+/.test(line)) failed++;
  else if (/^ok \d+.*# SKIP/i.test(line)) skipped++;
  else if (/^ok \d+/.test(line)) passed++;
});
child.on('close', (code, signal) => {
  if ((code !== 0 || signal) && failed === 0) failed = 1; // a crash with no failing test line
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
