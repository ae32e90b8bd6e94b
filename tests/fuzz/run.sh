#!/usr/bin/env bash
# usage: tests/fuzz/run.sh [SECONDS]   (default 60; CI's fuzz stage)
# Builds every libFuzzer target with clang + ASan/UBSan (build-fuzz/) and
# runs each for SECONDS from its seeds (erl-generated, or written by the harness).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-60}"
CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON -DKILN_SANITIZE=address -DKILN_WERROR=ON \
  -DKILN_BUILD_PERF=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ_SECONDS="$secs" >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_etf_decode fuzz_etf_seeds fuzz_handshake fuzz_handshake_seeds fuzz_dist_frame fuzz_dist_frame_seeds \
  fuzz_term_format fuzz_term_format_seeds
ctest --test-dir build-fuzz -L fuzz --output-on-failure
