// The one dependency direction of docs/architecture.md, checked in CI
// (`npm run lint:deps`): a layer imports only from the layers below it.
// dist (the scale-out collectives) needs only core and sits low, so that
// losses, methods (key queues, memory banks) and train can use it. data and
// losses are peers and import neither each other nor anything above nn.
// bench/ and test/ sit on top and may import any layer, except that nothing
// outside src/cli/ imports the CLI.
const LAYERS = [['core'], ['backend'], ['dist'], ['nn'], ['data', 'losses'], ['methods'], ['io'], ['eval'], ['train'], ['detect'], ['app'], ['cli']];

const folders = (names) => `^src/(${names.join('|')})/`;

const upward = LAYERS.flatMap((layer, i) =>
  layer.map((name) => {
    const notBelow = LAYERS.slice(i).flat().filter((other) => other !== name);
    return {
      name: `${name}-imports-only-below`,
      comment: `src/${name}/ may import only from ${LAYERS.slice(0, i).flat().join(', ') || 'nothing else in src'} (docs/architecture.md)`,
      severity: 'error',
      from: { path: folders([name]) },
      to: { path: folders(notBelow) },
    };
  }),
);

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'nothing-imports-cli',
      comment: 'the CLI is the top of the tree: flags and printing; shared pieces live in app/',
      severity: 'error',
      from: { pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'src-does-not-import-tests-or-benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
