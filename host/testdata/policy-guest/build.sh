#!/usr/bin/env bash
# Rebuild the test guest components used by the host's policy tests and benchmarks:
#   ../test-guest.wasm        against wit/policy.wit (regent:policy@0.1.0)
#   ../test-guest-b.wasm      the same, describing itself as `test-guest-b` (a second policy)
#   ../test-guest-v0.2.wasm   against wit-0.2.0/ (regent:policy@0.2.0): must be refused
# Needs the wasm32-wasip2 target (`rustup target add wasm32-wasip2`).
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-target}"
export CARGO_TARGET_DIR="$target"
cargo build --release --target wasm32-wasip2
cp "$target/wasm32-wasip2/release/policy_test_guest.wasm" ../test-guest.wasm
GUEST_NAME=test-guest-b cargo build --release --target wasm32-wasip2
cp "$target/wasm32-wasip2/release/policy_test_guest.wasm" ../test-guest-b.wasm
cargo build --release --target wasm32-wasip2 --features wrong-version
cp "$target/wasm32-wasip2/release/policy_test_guest.wasm" ../test-guest-v0.2.wasm
ls -l ../test-guest.wasm ../test-guest-b.wasm ../test-guest-v0.2.wasm
