/**
 * The TypeScript constants (literals, usable without the addon) equal what the C code was
 * compiled with, and the addon loads from where the TypeScript face looks for it.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import * as constants from '../../src/native/constants';
import { addon } from '../../src/native/binding';
import * as native from '../../src/native';

test('the addon is found and loaded', (t) => {
  t.true(existsSync(native.addonPath()));
  t.is(native.addonLoadError, null);
});

test('every TypeScript constant matches the native value', (t) => {
  const names = Object.keys(constants);
  t.true(names.length > 50);
  for (const name of names) {
    t.is((constants as Record<string, number>)[name], addon[name] as number, name);
  }
  // and every native number is mirrored (PAGE_SIZE is a runtime value: pageSize())
  for (const [name, value] of Object.entries(addon)) {
    if (typeof value === 'number' && name !== 'PAGE_SIZE') t.true(name in constants, `${name} missing in constants.ts`);
  }
});
