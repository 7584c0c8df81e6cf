#!/usr/bin/env bash
# The official IBM Key Protect Node SDK (npm `@ibm-cloud/ibm-key-protect` 0.1.2), unmodified,
# against `kmsim serve --rest-listen` (tests/clients/node/scenario.js), with the seed file of
# the Python scenario. Installs it into target/ci-tools/kp-node, failing loudly when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/ci-tools"
prefix="$tools/kp-node"
if [ ! -d "$prefix/node_modules/@ibm-cloud/ibm-key-protect" ]; then
  echo "installing @ibm-cloud/ibm-key-protect 0.1.2 from npm"
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" @ibm-cloud/ibm-key-protect@0.1.2 \
    || { echo "FAIL: npm install @ibm-cloud/ibm-key-protect" >&2; exit 1; }
fi

data="$(mktemp -d)"
log="$data/kmsim.log"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rest_addr="127.0.0.1:$(free_port)"
target/debug/kmsim serve --dev --data-dir "$data/db" --listen "127.0.0.1:$(free_port)" \
  --rest-listen "$rest_addr" --seed-file tests/clients/python/seed.yaml 2>"$log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 200); do
  if grep -q "seed file applied" "$log" 2>/dev/null; then break; fi
  sleep 0.1
done

key_file="$data/api-key"
python3 -c 'import re,sys; print(re.search(r"secret: (\S+)", open(sys.argv[1]).read()).group(1))' \
  tests/clients/python/seed.yaml >"$key_file"
if ! KMSIM_REST_URL="http://$rest_addr" KMSIM_INSTANCE=7d1e5c2a-9b3f-4c8d-a1e2-3f4b5c6d7e8f \
  KMSIM_API_KEY_FILE="$key_file" NODE_PATH="$prefix/node_modules" \
  node tests/clients/node/scenario.js; then
  echo "FAIL: the Node SDK scenario failed" >&2
  echo "--- server log" >&2
  cat "$log" >&2
  exit 1
fi
