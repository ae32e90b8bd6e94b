#!/usr/bin/env bash
# The README's main command: installs what is missing, builds (Release) and
# runs the main job. Until the demo node (issue 5) exists, the main job is
# the side-by-side benchmark: every scenario in Kiln and in Erlang, one
# table. Extra arguments go to perf/run (e.g. --quick, --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKILN_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)"
exec perf/run --build-dir build-release "$@"
