#!/usr/bin/env bash
# Gantry's release tool end to end, on files it creates in a temporary
# directory: keys, a 2-of-2 trust root, a container manifest, a signature,
# verification against the trust root, inspection, and two refusals.
# Set GANTRY_DEMO_KEEP=1 to keep the directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p gantry-signing --bin gantry-sign
bin="$repo/target/release/gantry-sign"
gantry-sign() { "$bin" "$@"; }

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

printf '\nDone: every step above ran on files in %s.\n' "$work"
