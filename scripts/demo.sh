#!/usr/bin/env bash
# Gantry end to end, on files it creates in a temporary directory: keys, a
# 2-of-2 trust root, a container manifest, a signature, verification against
# the trust root, inspection and refusals; then a simulated device that
# installs the release, runs it, refuses a tampered and an older release, and
# rolls a crashing new version back by itself.
# Set GANTRY_DEMO_KEEP=1 to keep the directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p gantry-signing --bin gantry-sign -p gantry-device --bin gantry-device
bin="$repo/target/release"
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
gantry-device status --json | grep -q '"sequence": *1' || { echo "app is not back on version 1" >&2; exit 1; }

printf '\nDone: every step above ran on files in %s.\n' "$work"
