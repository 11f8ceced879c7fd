#!/usr/bin/env bash
# Builds gantry-device as it ships to a device: the `device` profile (size
# over speed, fat LTO, one codegen unit), linked statically against glibc
# and with packed relative relocations (RELR).
#
# Why: on the device most of the runtime's resident memory is the binary's
# own pages. Static linking drops libc.so, libm and ld.so (1.8 MiB resident
# when dynamic) for the few libc functions used; RELR shrinks the
# relocation table that a position-independent binary reads in full at
# every start from 0.7 MB to a few KiB, while keeping ASLR. Measured in
# docs/benchmarks.md ("Idle RSS by build").
#
# The explicit --target keeps these flags away from build scripts and
# proc macros. Output: target/x86_64-unknown-linux-gnu/device/gantry-device
# (strip it for flashing; symbols are not mapped at run time either way).
#
# Static glibc: name lookups through NSS (getaddrinfo on a host name) need
# the glibc shared libraries of the same version at run time; a device that
# has none should name its server by IP address or ship them.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
  cargo build --locked --profile device --target "$target" -p gantry-device --bin gantry-device "$@"
echo "target/$target/device/gantry-device"
