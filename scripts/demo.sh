#!/usr/bin/env bash
# The README's main command: installs what is missing, builds (Release),
# starts the demo node kiln-node, and drives it from a real erl node: ping,
# gen_server calls, a counter crashed and restarted by its supervisor, rpc,
# and a throughput figure. Both nodes use a private EPMD port, which
# kiln-node serves itself, so nothing else on the machine is disturbed.
#   scripts/demo.sh           the demo
#   scripts/demo.sh --perf    also the benchmarks (Kiln and Erlang side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKILN_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target kiln-node kiln_bench

port=$(python3 scripts/free_port.py)
export ERL_EPMD_PORT=$port
host=$(hostname -s)
log=$(mktemp)
./build-release/kiln-node --name kiln --cookie kiln >"$log" 2>&1 &
node_pid=$!
trap 'kill $node_pid 2>/dev/null || true; wait $node_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do grep -q "is up" "$log" && break; sleep 0.05; done
cat "$log"
echo
echo "erl (demo_client@$host) talks to kiln@$host:"
escript otp/demo/demo_client.escript "kiln@$host"
if [ "${1:-}" = "--perf" ]; then
  echo
  perf/run --build-dir build-release
fi
