// The Debian packages the data layer reads (docs/architecture.md, data sources), and a check
// that names the missing package instead of failing later with ENOENT.
import { existsSync } from 'node:fs';

export const DATA_PACKAGES = {
  fashionMnist: { path: '/usr/share/datasets/fashion-mnist', debian: 'dataset-fashion-mnist' },
  tuxpaintStamps: { path: '/usr/share/tuxpaint/stamps', debian: 'tuxpaint-stamps-default' },
  openclipart: { path: '/usr/share/openclipart/png', debian: 'openclipart-png' },
  gnomeBackgrounds: { path: '/usr/share/backgrounds/gnome', debian: 'gnome-backgrounds' },
} as const;

export type DataPackage = keyof typeof DATA_PACKAGES;

/** Throws, naming the apt package, when a package's folder is absent. */
export function requirePackage(name: DataPackage): string {
  const { path, debian } = DATA_PACKAGES[name];
  if (!existsSync(path)) throw new Error(`${path} not found: install it with \`apt-get install ${debian}\``);
  return path;
}

/** The apt packages among `names` whose folders are absent. */
export function missingPackages(names: DataPackage[]): string[] {
  return names.filter((n) => !existsSync(DATA_PACKAGES[n].path)).map((n) => DATA_PACKAGES[n].debian);
}
