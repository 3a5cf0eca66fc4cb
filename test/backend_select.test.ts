import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const select = fileURLToPath(new URL('../src/backend/select.js', import.meta.url));

/** Runs useBackend(choice) in a fresh Node process, so backend registration starts clean. */
function useBackendInChild(choice: string, env: Record<string, string> = {}) {
  const script = `import(${JSON.stringify(select)}).then(async (m) => {
    const name = await m.useBackend(${JSON.stringify(choice)});
    const tf = await import(${JSON.stringify(fileURLToPath(new URL('../src/core/tf.js', import.meta.url)))});
    console.log(JSON.stringify({ name, active: tf.getBackend() }));
  }).catch((e) => { console.error('ERROR ' + e.message); process.exit(3); });`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
}

describe('backend selection', () => {
  test('auto picks native when the addon is built', () => {
    const r = useBackendInChild('auto');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), { name: 'native', active: 'native' });
  });

  test('a missing addon names libdnnl-dev and the command that fixes it', () => {
    const r = useBackendInChild('native', { SELFSUP_NATIVE_ADDON: '/nonexistent/selfsup_native.node' });
    assert.equal(r.status, 3);
    assert.match(r.stderr, /--backend native/);
    assert.match(r.stderr, /libdnnl-dev/);
    assert.match(r.stderr, /npm run setup/);
  });

  test('auto falls back to another backend when the addon is missing', () => {
    const r = useBackendInChild('auto', { SELFSUP_NATIVE_ADDON: '/nonexistent/selfsup_native.node' });
    assert.equal(r.status, 0, r.stderr);
    const { name } = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.ok(name === 'wasm' || name === 'cpu', name);
  });

  test('an unknown backend name is a clear error', () => {
    const r = useBackendInChild('tpu');
    assert.equal(r.status, 3);
    assert.match(r.stderr, /--backend: unknown backend "tpu"/);
  });

  test('SELFSUP_THREADS sets the native thread count', () => {
    const out = execFileSync(process.execPath, ['--input-type=module', '-e',
      `import(${JSON.stringify(fileURLToPath(new URL('../src/backend/native_addon.js', import.meta.url)))}).then((m) => console.log(m.nativeAddon().info().threads))`],
    { env: { ...process.env, SELFSUP_THREADS: '1' }, encoding: 'utf8' });
    assert.equal(out.trim(), '1');
  });
});
