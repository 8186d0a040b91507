#!/usr/bin/env bash
# Build Regent's policy plugins (WebAssembly components) and copy them into place:
#   policies/<name>.wasm              the policies (each with its hand-written <name>.toml)
#   tests/fixtures/policies/*.wasm    the fixtures of the host's fault tests
#
# Usage: plugins/build.sh [--out DIR]
#   --out DIR   write DIR/policies and DIR/tests/fixtures/policies instead of the repository's
#               (check-reproducible.sh uses it). CARGO_TARGET_DIR is honoured.
#
# The build is reproducible: the same sources, Cargo.lock and Rust version give byte-identical
# components on any machine and in any directory. Local paths (the repository, CARGO_HOME,
# the Rust toolchain) are remapped, so none of them ends up in a component.
set -euo pipefail

# The Rust release that built the committed components. Another release builds working
# components too, but not byte-identical ones.
RUST_VERSION=1.95.0
TARGET=wasm32-wasip2

# The policy crates: plugins/<name> -> policies/<name>.wasm (beside policies/<name>.toml).
POLICIES=(patroni-default zone-aware sync-only replication-guard event-journal)
# The fixture crates: plugins/<crate> -> tests/fixtures/policies/<file>.wasm.
FIXTURES=(faulty:faulty faulty-wrong-version:wrong-version)

plugins=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(dirname "$plugins")
out=$root
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$(mkdir -p "$2" && cd "$2" && pwd -P); shift 2 ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build.sh: error: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust $RUST_VERSION with rustup"
rustc_version=$(rustc --version | awk '{print $2}')
if [ "$rustc_version" != "$RUST_VERSION" ]; then
    echo "build.sh: warning: rustc $rustc_version is not $RUST_VERSION, which built the committed" \
         "components: the output will work but will not be byte-identical to them." >&2
fi

# The wasm32-wasip2 standard library.
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$TARGET" ]; then
    command -v rustup >/dev/null \
        || die "the $TARGET target is not installed and rustup is not available to add it"
    echo "build.sh: adding the $TARGET target (rustup target add $TARGET)" >&2
    rustup target add "$TARGET" \
        || die "'rustup target add $TARGET' failed: the plugins cannot be built without it." \
               "Add the target by hand (it needs the Rust distribution server), or use the" \
               "committed components in policies/ and tests/fixtures/policies/."
    [ -d "$sysroot/lib/rustlib/$TARGET" ] || die "rustup added $TARGET, but not to $sysroot"
fi

# The copy of the WIT that the wrong-version fixture is built against must differ from the
# real one only in its version.
wrong_wit=$plugins/faulty-wrong-version/wit/policy.wit
if ! diff -q <(sed 's/regent:policy@0\.0\.9/regent:policy@0.1.0/g' "$wrong_wit") "$root/wit/policy.wit" >/dev/null; then
    diff -u "$root/wit/policy.wit" <(sed 's/regent:policy@0\.0\.9/regent:policy@0.1.0/g' "$wrong_wit") >&2 || true
    die "$wrong_wit has drifted from wit/policy.wit (above, its version put back to 0.1.0):" \
        "copy wit/policy.wit over it and change only the version to 0.0.9"
fi

# Reproducibility: no local path may leak into a component (panic locations are file paths).
# Workspace sources already appear relative to plugins/; crates from the registry appear under
# CARGO_HOME; the standard library appears as /rustc/<commit>/, also when rust-src is installed.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cargo_home=$(cd "$cargo_home" 2>/dev/null && pwd -P || echo "$cargo_home")
commit=$(rustc -vV | sed -n 's/^commit-hash: //p')
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS"
export RUSTFLAGS="--remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$sysroot/lib/rustlib/src/rust=/rustc/$commit --remap-path-prefix=$root=/regent"
export SOURCE_DATE_EPOCH=0

start=$(date +%s)
echo "build.sh: cargo build --release --target $TARGET (rustc $rustc_version)" >&2
(cd "$plugins" && cargo build --locked --release --target "$TARGET")
built=${CARGO_TARGET_DIR:-$plugins/target}/$TARGET/release
elapsed=$(( $(date +%s) - start ))

# Copy into place: write a temporary file beside the destination and rename it, so that a
# Regent watching policies/ never reads a half-written component.
install_file() { # SRC DEST
    local dest=$2 tmp
    mkdir -p "$(dirname "$dest")"
    tmp=$(dirname "$dest")/.$(basename "$dest").tmp
    cp "$1" "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$dest"
    printf '  %-45s %7d bytes\n' "${dest#"$out"/}" "$(stat -c %s "$dest")" >&2
}

echo "build.sh: built in ${elapsed}s; installing into $out" >&2
for p in "${POLICIES[@]}"; do
    install_file "$built/${p//-/_}.wasm" "$out/policies/$p.wasm"
done
fixtures=$out/tests/fixtures/policies
for f in "${FIXTURES[@]}"; do
    crate=${f%%:*}
    install_file "$built/${crate//-/_}.wasm" "$fixtures/${f#*:}.wasm"
done

# Two files that are not components, for the host's load errors.
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
# garbage.wasm: 16 fixed arbitrary bytes (no wasm magic).
printf '\x7f\x13\xa9\x00REGENT\xde\xad\xbe\xef\x01\x02' > "$tmpdir/garbage.wasm"
install_file "$tmpdir/garbage.wasm" "$fixtures/garbage.wasm"
# core-module.wasm: a valid core module (version 1, not a component) that exports an empty
# function `describe`: magic+version, type section (func () -> ()), function section,
# export section ("describe" -> func 0), code section (no locals, `end`).
printf '\x00asm\x01\x00\x00\x00''\x01\x04\x01\x60\x00\x00''\x03\x02\x01\x00''\x07\x0c\x01\x08describe\x00\x00''\x0a\x04\x01\x02\x00\x0b' \
    > "$tmpdir/core-module.wasm"
install_file "$tmpdir/core-module.wasm" "$fixtures/core-module.wasm"
