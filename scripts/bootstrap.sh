#!/usr/bin/env bash
# Brings a fresh Debian/Ubuntu machine to a working selfsup checkout, and does
# nothing that is already done: apt packages, npm dependencies, the native
# oneDNN addon and the TypeScript build. Both `npm run demo` and `npm test` call it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stamps="$root/.stamps"
mkdir -p "$stamps"
say() { printf '\033[1mselfsup setup:\033[0m %s\n' "$*" >&2; }

# Debian packages. libdnnl-dev is the native backend's only hard requirement;
# the data sets and clip-art packages feed the data layer and its tests;
# Open MPI (with pkg-config for its flags) builds the optional MPI addon for
# data-parallel training and runs its tests;
# chromium opens the HTML report in its browser test (test/app_report.test.ts).
# Ubuntu's apt has no real chromium (a snap stub), so there it is skipped with
# a warning and only that test fails, saying so.
apt_packages=(libdnnl-dev g++ make python3 dataset-fashion-mnist
  tuxpaint-stamps-default openclipart-png gnome-backgrounds
  openmpi-bin libopenmpi-dev pkg-config)
if ! grep -qs '^ID=ubuntu' /etc/os-release; then apt_packages+=(chromium)
elif [ ! -x /usr/bin/chromium ]; then say "warning: Ubuntu's apt has no real chromium: the report's browser test will fail until /usr/bin/chromium exists"; fi
if [ -n "${SELFSUP_EXTRA_APT:-}" ]; then read -r -a extra <<<"$SELFSUP_EXTRA_APT"; apt_packages+=("${extra[@]}"); fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    say "missing system packages: ${missing[*]}, and no apt-get to install them. Install them by hand, then run this again."
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "need root or sudo to install: ${missing[*]}"; exit 1; }
    sudo="sudo"
  fi
  say "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm dependencies: reinstall only when the lock file changed.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamps/npm" 2>/dev/null)" != "$lock_sum" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamps/npm"
fi

# Build against the running Node's own headers when it ships them, so no
# header download is needed (CI has no network beyond the registries).
node_prefix=$(dirname "$(dirname "$(command -v node)")")
gyp_args=(rebuild --jobs="$(nproc)" --loglevel=error)
if [ -f "$node_prefix/include/node/node_api.h" ]; then gyp_args+=(--nodedir="$node_prefix"); fi

# Native addon: rebuild when any native source or the binding changed.
native_sum=$(cat native/binding.gyp native/src/* | sha256sum | cut -d' ' -f1)
if [ ! -f native/build/Release/selfsup_native.node ] || [ "$(cat "$stamps/native" 2>/dev/null)" != "$native_sum" ]; then
  say "building the native oneDNN addon"
  (cd native && "$root/node_modules/.bin/node-gyp" "${gyp_args[@]}") >"$stamps/native-build.log" 2>&1 || {
    tail -40 "$stamps/native-build.log" >&2
    say "native build failed (full log: .stamps/native-build.log). Is libdnnl-dev installed? sudo apt-get install libdnnl-dev g++ make"
    exit 1
  }
  echo "$native_sum" >"$stamps/native"
fi

# Optional: the MPI addon (native/mpi/), built where MPI is installed; without
# it everything else builds and runs, and the MPI tests say why they skip.
if pkg-config --exists mpi 2>/dev/null; then
  mpi_sum=$(cat native/mpi/binding.gyp native/mpi/src/* | sha256sum | cut -d' ' -f1)
  if [ ! -f native/mpi/build/Release/selfsup_mpi.node ] || [ "$(cat "$stamps/mpi" 2>/dev/null)" != "$mpi_sum" ]; then
    say "building the MPI addon (native/mpi)"
    (cd native/mpi && "$root/node_modules/.bin/node-gyp" "${gyp_args[@]}") >"$stamps/mpi-build.log" 2>&1 || {
      tail -40 "$stamps/mpi-build.log" >&2
      say "MPI addon build failed (full log: .stamps/mpi-build.log)"
      exit 1
    }
    echo "$mpi_sum" >"$stamps/mpi"
  fi
fi

# TypeScript: tsc is incremental, so this is quick when nothing changed.
"$root/node_modules/.bin/tsc" -p tsconfig.json
