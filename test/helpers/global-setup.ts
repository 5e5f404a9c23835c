import { execFileSync } from 'node:child_process';
import path from 'node:path';

/** Child-process tests run the built CLI (dist/), as users do: build it once per test run. */
export default function setup(): void {
  const root = path.resolve(import.meta.dirname, '../..');
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
    stdio: 'inherit',
    cwd: root,
  });
}
