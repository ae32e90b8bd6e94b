#!/usr/bin/env bash
# The README's test command: installs what is missing, configures, builds
# with -Werror and runs every test.
#   scripts/test.sh            the whole suite (build/)
#   scripts/test.sh --asan     the whole suite under ASan+UBSan (build-asan/)
#   scripts/test.sh --tsan     the concurrency tests under TSan (build-tsan/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

mode="${1:-}"
dir=build
args=(-DKILN_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
ctest_args=(--output-on-failure --no-tests=error)
case "$mode" in
  "") ;;
  --asan) dir=build-asan; args+=(-DKILN_SANITIZE=address -DKILN_BUILD_PERF=OFF) ;;
  --tsan) dir=build-tsan; args+=(-DKILN_SANITIZE=thread -DKILN_BUILD_PERF=OFF); ctest_args+=(-L "concurrency|interop") ;;
  *) echo "usage: $0 [--asan|--tsan]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
# io_uring and loopback tests share the machine: two at a time is enough.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
ctest --test-dir "$dir" -j2 "${ctest_args[@]}"
