#!/usr/bin/env bash
# Gantry end to end, on files it creates in a temporary directory: keys, a
# 2-of-2 trust root, a container manifest, a signature, verification against
# the trust root, inspection and refusals; then a simulated device that
# installs the release, runs it, refuses a tampered and an older release, and
# rolls a crashing new version back by itself; last, the update server on
# its embedded defaults, from which that device pulls, installs and confirms
# a new release by itself.
# Set GANTRY_DEMO_KEEP=1 to keep the directory, GANTRY_DEMO_BIN=DIR to run
# binaries already built there (CI: the ones `cargo test` built) instead of
# a release build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${GANTRY_DEMO_BIN:-}" ]; then
  bin=$(cd "$GANTRY_DEMO_BIN" && pwd)
else
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p gantry-signing --bin gantry-sign -p gantry-device --bin gantry-device -p gantry-server --bin gantry-server
  bin="$repo/target/release"
fi
fixtures="$repo/device-runtime/fixtures/misbehave"
gantry-sign() { "$bin/gantry-sign" "$@"; }
gantry-device() { "$bin/gantry-device" --state "$work/device" "$@"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/gantry-demo.XXXXXX")
if [ "${GANTRY_DEMO_KEEP:-0}" = 1 ]; then echo "working in $work (kept)"; else trap 'rm -rf "$work"' EXIT; fi
cd "$work"

step() { printf '\n== %s\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }
refused() {
  printf '$ %s    # must be refused\n' "$*"
  if "$@"; then echo "UNEXPECTEDLY ACCEPTED" >&2; exit 1; else echo "(refused, exit $?)"; fi
}

step "Keys: two offline root keys, a release key, the server's online key"
run gantry-sign keygen --alg ed25519 --out root-a
run gantry-sign keygen --alg ed25519 --out root-b
run gantry-sign keygen --alg p256 --out release
run gantry-sign keygen --alg p256 --out server
ls -l ./*.key ./*.pub

step "Trust root: both root keys must sign it"
run gantry-sign trust create --root root-a.pub --root root-b.pub --root-threshold 2 \
  --release release.pub --server server.pub --expires-in 365d --out root.cbor
run gantry-sign trust sign --key root-a.key --key root-b.key --in root.cbor --out root.cbor
run gantry-sign trust verify root.cbor

step "A container release: module, signed config, one blob"
printf '\0asm\1\0\0\0' > hello.wasm
head -c 4096 /dev/urandom > model.bin
cat > hello.toml <<'TOML'
name = "hello"
version = "1.0.0"
capabilities = ["wasi:stdout", "wasi:clocks", "gantry:sensor"]
[limits]
memory = "4 MiB"
cpu_percent = 20
[health]
kind = "heartbeat"
interval_ms = 2000
[restart]
policy = "on-failure"
TOML
run gantry-sign container --module hello.wasm --config hello.toml --blob model=model.bin \
  --vendor example.com --class demo-board --sequence 1 --out hello.suit
run gantry-sign sign --key release.key --in hello.suit --out hello.suit

step "Verify against the trust root, for this device class, above the installed sequence 0"
run gantry-sign verify --trust root.cbor --vendor example.com --class demo-board --min-sequence 1 hello.suit
run gantry-sign inspect hello.suit

step "What verification refuses"
refused gantry-sign verify --trust root.cbor --min-sequence 2 hello.suit
cp hello.suit tampered.suit
printf '\x09' | dd of=tampered.suit bs=1 seek=$(($(stat -c %s hello.suit) - 20)) conv=notrunc status=none
refused gantry-sign verify --trust root.cbor tampered.suit
refused gantry-sign verify --trust root.cbor --class other-board --vendor example.com hello.suit

step "A device: provisioned with the trust root, its flash a sparse file"
run gantry-device init --trust root.cbor --vendor example.com --class demo-board --slot-mib 1
cat > app.toml <<'TOML'
name = "app"
version = "1.0.0"
capabilities = ["wasi:stdout"]
[restart]
policy = "on-failure"
max_restarts = 1
backoff_initial_ms = 100
TOML
run gantry-sign container --module "$fixtures/hello.wasm" --config app.toml \
  --vendor example.com --class demo-board --sequence 1 --key release.key --out app-1.suit
run gantry-device install app-1.suit --module "$fixtures/hello.wasm"
run gantry-device run --seconds 2
run gantry-device status
run gantry-device logs app

step "What the device refuses (nothing is written)"
cp app-1.suit app-tampered.suit
printf '\x09' | dd of=app-tampered.suit bs=1 seek=$(($(stat -c %s app-1.suit) - 20)) conv=notrunc status=none
refused gantry-device install app-tampered.suit --module "$fixtures/hello.wasm"
refused gantry-device install app-1.suit --module "$fixtures/crash.wasm"
run gantry-sign container --module "$fixtures/hello.wasm" --config app.toml \
  --vendor example.com --class demo-board --sequence 0 --key release.key --out app-0.suit
refused gantry-device install app-0.suit --module "$fixtures/hello.wasm"

step "A new version that crashes on start: tried, then rolled back by itself"
sed -i 's/^version = .*/version = "2.0.0"/' app.toml
run gantry-sign container --module "$fixtures/crash.wasm" --config app.toml \
  --vendor example.com --class demo-board --sequence 2 --key release.key --out app-2.suit
run gantry-device install app-2.suit --module "$fixtures/crash.wasm"
run gantry-device run --seconds 3
run gantry-device status
# Captured first: `grep -q` on a pipe exits at the first match, and the
# writer would see a broken pipe.
status=$(gantry-device status --json)
grep -q '"sequence": *1' <<< "$status" || { echo "app is not back on version 1" >&2; exit 1; }

step "The update server on its embedded defaults: SQLite, blobs and keys in one directory"
# The online key is the one the trust root names in its server role; left
# out, the server would create its own on first start.
GANTRY_SERVER_KEY="$work/server.key" "$bin/gantry-server" serve --listen 127.0.0.1:0 --data server-data \
  > server.out 2> server.log &
server_pid=$!
stop_server() { kill "$server_pid" 2>/dev/null && wait "$server_pid" || true; }
trap 'stop_server; [ "${GANTRY_DEMO_KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^admin API token' server.out && break; sleep 0.1; done
cat server.out
url=$(sed -n 's|^gantry-server listening on ||p' server.out)
[ -n "$url" ] || { cat server.log >&2; echo "the server did not start" >&2; exit 1; }
api() {
  local rc=0
  curl -fsS -H "authorization: Bearer $(cat server-data/admin-token)" "$@" || rc=$?
  echo
  return "$rc"
}

step "An operator uploads the trust root and a signed release; the server verifies both"
run api -X PUT --data-binary @root.cbor "$url/api/v1/trust-root"
sed -i 's/^version = .*/version = "3.0.0"/' app.toml
run gantry-sign container --module "$fixtures/hello.wasm" --config app.toml \
  --vendor example.com --class demo-board --sequence 3 --key release.key --out app-3.suit
run api -X PUT --data-binary @"$fixtures/hello.wasm" "$url/api/v1/blobs/sha256/$(sha256sum "$fixtures/hello.wasm" | cut -d' ' -f1)"
release=$(api -X POST --data-binary @app-3.suit "$url/api/v1/releases")
echo "$release"
digest=$(printf '%s' "$release" | sed -n 's/.*"manifest_digest":"\([0-9a-f]*\)".*/\1/p')
printf '$ api -X POST --data-binary @tampered.suit %s/api/v1/releases    # must be refused\n' "$url"
if api -X POST --data-binary @tampered.suit "$url/api/v1/releases" 2>&1; then
  echo "UNEXPECTEDLY ACCEPTED" >&2; exit 1
else echo "(refused)"; fi

step "The device is pre-authorized by its public key and told to run the release"
identity=$(gantry-device identity --json)
echo "$identity"
id=$(printf '%s' "$identity" | sed -n 's/.*"device_id": *"\([0-9a-f]*\)".*/\1/p')
pubkey=$(printf '%s' "$identity" | sed -n 's/.*"public_key": *"\([^"]*\)".*/\1/p')
run api -X POST -H 'content-type: application/json' \
  -d "{\"device_id\":\"$id\",\"public_key\":\"$pubkey\",\"groups\":[\"demo\"]}" "$url/api/v1/devices"
run api -X PUT -H 'content-type: application/json' -d "{\"manifest_digest\":\"$digest\"}" \
  "$url/api/v1/devices/$id/assignments/app"

step "The device pulls: login, check-in, signed ticket, download by digest, install, probation, confirm"
run gantry-device run --server "$url" --seconds 8 | tee pull.out
grep -q 'confirmed' pull.out || { echo "the device did not confirm the pulled release" >&2; exit 1; }
run gantry-device status
step "What the server now knows the device runs (what it confirmed, not what was assigned)"
run api "$url/api/v1/devices/$id"
view=$(api "$url/api/v1/devices/$id")
grep -q "$digest" <<< "$view" || { echo "the server does not show the confirmed release" >&2; exit 1; }
stop_server
grep -q 'shutting down' server.log || { echo "the server did not shut down gracefully" >&2; exit 1; }

printf '\nDone: every step above ran on files in %s.\n' "$work"
