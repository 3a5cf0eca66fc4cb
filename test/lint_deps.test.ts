// The dependency-direction lint (.dependency-cruiser.cjs, `npm run lint:deps`):
// it fails on a back edge (methods -> train) and on an import of the CLI,
// in a small fixture tree, and passes on this repository.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');

/** depcruise's exit status and report, without colour codes (CI turns them on). */
function lint(cwd: string, ...dirs: string[]) {
  const env = { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' };
  const r = spawnSync(DEPCRUISE, [...dirs, '--config', CONFIG], { cwd, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout.replace(/\x1b\[[0-9;]*m/g, '') };
}

function fixture(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-lint-'));
  copyFileSync(join(ROOT, 'tsconfig.json'), join(dir, 'tsconfig.json'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

test('the lint fails on a back edge and on an import of the CLI, naming the rule and the files', () => {
  const dir = fixture({
    'src/train/config.ts': 'export const epochs = 1;\n',
    'src/methods/moco.ts': "import { epochs } from '../train/config.js';\nexport const e = epochs;\n",
    'src/cli/options.ts': 'export const flag = 1;\n',
    'src/app/demo.ts': "import { flag } from '../cli/options.js';\nexport const f = flag;\n",
    'src/eval/knn.ts': "import { epochs } from '../train/config.js';\nexport const k = epochs;\n",
  });
  const r = lint(dir, 'src');
  assert.notEqual(r.status, 0, r.stdout);
  assert.match(r.stdout, /methods-imports-only-below: src\/methods\/moco\.ts → src\/train\/config\.ts/);
  assert.match(r.stdout, /eval-imports-only-below: src\/eval\/knn\.ts → src\/train\/config\.ts/);
  assert.match(r.stdout, /nothing-imports-cli: src\/app\/demo\.ts → src\/cli\/options\.ts/);
});

test('the lint allows downward imports, and this repository passes it', () => {
  const dir = fixture({
    'src/core/tf.ts': 'export const tf = 1;\n',
    'src/methods/moco.ts': "import { tf } from '../core/tf.js';\nexport const m = tf;\n",
    'src/train/loop.ts': "import { m } from '../methods/moco.js';\nexport const l = m;\n",
  });
  const fine = lint(dir, 'src');
  assert.equal(fine.status, 0, fine.stdout);
  const repo = lint(ROOT, 'src', 'bench');
  assert.equal(repo.status, 0, repo.stdout);
  assert.match(repo.stdout, /no dependency violations found/);
});
