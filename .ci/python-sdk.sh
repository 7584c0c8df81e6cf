#!/usr/bin/env bash
# The official IBM Key Protect Python SDK (PyPI `keyprotect` 3.0.1), unmodified, against
# `kmsim serve --rest-listen` (tests/clients/python/scenario.py): installs it into
# target/ci-tools/kp-venv (failing loudly when it cannot), starts kmsim with a simulated clock
# (starting at the real time, so the SDK's token timing holds) and the scenario's seed file,
# and fails when the scenario fails. Advancing the clock goes through grpcurl
# (SimulatorService/AdvanceClock), installed by .ci/grpcurl-smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/ci-tools"
venv="$tools/kp-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import keyprotect' 2>/dev/null; then
  echo "installing keyprotect 3.0.1 from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet keyprotect==3.0.1 || { echo "FAIL: pip install keyprotect" >&2; exit 1; }
fi
grpcurl="$tools/venv/bin/grpcurl"
[ -x "$grpcurl" ] || { echo "FAIL: grpcurl missing (run .ci/grpcurl-smoke.sh first)" >&2; exit 1; }

data="$(mktemp -d)"
log="$data/kmsim.log"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
grpc_addr="127.0.0.1:$(free_port)"
rest_addr="127.0.0.1:$(free_port)"
target/debug/kmsim serve --dev --clock simulated --data-dir "$data/db" --listen "$grpc_addr" \
  --rest-listen "$rest_addr" --seed-file tests/clients/python/seed.yaml 2>"$log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$grpcurl" -plaintext "$grpc_addr" list >/dev/null 2>&1; then break; fi
  sleep 0.1
done

# The API key reaches the scenario in a file, never on a command line.
key_file="$data/api-key"
service_key_file="$data/service-api-key"
secret() { python3 -c 'import re,sys; print(re.findall(r"secret: (\S+)", open(sys.argv[1]).read())[int(sys.argv[2])])' tests/clients/python/seed.yaml "$1"; }
secret 0 >"$key_file"
secret 1 >"$service_key_file"
advance="$data/advance"
cat >"$advance" <<ADVANCE
#!/usr/bin/env bash
"$grpcurl" -plaintext -H 'authorization: Bearer kmsim-dev-token' -d "{\"duration\":\"\${1}s\"}" \
  "$grpc_addr" kmsim.v1.SimulatorService/AdvanceClock >/dev/null
ADVANCE
chmod +x "$advance"

if ! KMSIM_REST_URL="http://$rest_addr" KMSIM_INSTANCE=7d1e5c2a-9b3f-4c8d-a1e2-3f4b5c6d7e8f \
  KMSIM_API_KEY_FILE="$key_file" KMSIM_SERVICE_KEY_FILE="$service_key_file" KMSIM_ADVANCE="$advance" \
  "$venv/bin/python" tests/clients/python/scenario.py; then
  echo "FAIL: the Python SDK scenario failed" >&2
  echo "--- server log" >&2
  cat "$log" >&2
  exit 1
fi
