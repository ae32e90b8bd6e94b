#!/usr/bin/env bash
# Installs what Kiln needs on Debian (12+) if it is missing. Idempotent and
# quiet when everything is already there. Sourced or run by the README's
# commands; needs root or sudo only when something must be installed.
set -euo pipefail

KILN_DEBS=(
  build-essential cmake pkg-config
  libck-dev libjemalloc-dev liburing-dev libcmocka-dev zlib1g-dev libssl-dev
  erlang-nox clang libclang-rt-14-dev valgrind python3
)

missing=()
for p in "${KILN_DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kiln setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "kiln setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v erl >/dev/null || { echo "kiln setup: erl is still missing after installing erlang-nox" >&2; exit 1; }
