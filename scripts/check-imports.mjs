#!/usr/bin/env node
// Lint: imports flow one way (ARCHITECTURE.md): cli → daemon → sync/sinks/subjects/simulator →
// hub/crypto/pdnd/store/config → shared leaf modules. A module may import its own layer or below.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../src');
const LAYER = { cli: 4, daemon: 3, sync: 2, sinks: 2, subjects: 2, simulator: 2, hub: 1, crypto: 1, pdnd: 1, store: 1, config: 1 };
const layerOf = (file) => {
  const top = path.relative(root, file).split(path.sep)[0];
  return top.endsWith('.ts') ? 0 : (LAYER[top] ?? 0);
};

const problems = [];
const walk = (dir) => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full);
    else if (entry.name.endsWith('.ts')) check(full);
  }
};
const check = (file) => {
  const text = fs.readFileSync(file, 'utf8');
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'(\.[^']+)'/gms)) {
    const target = path.resolve(path.dirname(file), m[1]).replace(/\.js$/, '.ts');
    if (!target.startsWith(root)) continue;
    if (layerOf(target) > layerOf(file)) {
      const line = text.slice(0, m.index).split('\n').length;
      problems.push(`${path.relative(process.cwd(), file)}:${line}: imports ${m[1]} from a higher layer`);
    }
  }
};
walk(root);
if (problems.length > 0) {
  console.error(problems.join('\n'));
  console.error(`\n${problems.length} import(s) against the layering (cli → daemon → sync/sinks/subjects/simulator → hub/crypto/pdnd/store/config → leaf modules)`);
  process.exit(1);
}
console.log('imports: layering respected');
