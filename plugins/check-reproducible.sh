#!/usr/bin/env bash
# Check that the committed components are what their sources build: copy wit/ and plugins/
# (as in the work tree, without target/) to a temporary directory at another path, build there
# from scratch with build.sh, and compare byte for byte with policies/*.wasm and
# tests/fixtures/policies/*.wasm.
#
# Usage: plugins/check-reproducible.sh [--keep]
#   --keep   keep the temporary directory (its path is printed)
#
# Exit status: 0 when every component is identical; 1 with the stale files listed (rebuild with
# plugins/build.sh and commit them); 2 when the check cannot run (wrong Rust version, build
# failure).
set -euo pipefail

plugins=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(dirname "$plugins")
keep=false
[ "${1:-}" = --keep ] && keep=true

expected=$(sed -n 's/^RUST_VERSION=//p' "$plugins/build.sh")
actual=$(rustc --version | awk '{print $2}')
if [ "$actual" != "$expected" ]; then
    echo "check-reproducible.sh: rustc is $actual, but the committed components were built by" \
         "$expected: a byte comparison would be meaningless. Use Rust $expected." >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/regent-plugins-check.XXXXXX")
if $keep; then
    echo "check-reproducible.sh: keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi

# The sources at another path: every file git knows of or would add, under wit/ and plugins/.
mkdir -p "$tmp/src"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard -- wit plugins \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$tmp/src"
else
    cp -a "$root/wit" "$tmp/src/"
    (cd "$root" && tar --exclude=./plugins/target -cf - ./plugins) | tar -xf - -C "$tmp/src"
fi

echo "check-reproducible.sh: building in $tmp/src" >&2
if ! CARGO_TARGET_DIR="$tmp/target" "$tmp/src/plugins/build.sh" --out "$tmp/out"; then
    echo "check-reproducible.sh: the build failed" >&2
    exit 2
fi

stale=()
while IFS= read -r -d '' built; do
    rel=${built#"$tmp/out/"}
    if [ ! -f "$root/$rel" ]; then
        stale+=("$rel (missing)")
    elif ! cmp -s "$built" "$root/$rel"; then
        stale+=("$rel")
    fi
done < <(find "$tmp/out" -type f -name '*.wasm' -print0 | sort -z)

if [ ${#stale[@]} -gt 0 ]; then
    echo "check-reproducible.sh: STALE: these committed components differ from what their" \
         "sources build (run plugins/build.sh and commit the result):" >&2
    printf '  %s\n' "${stale[@]}" >&2
    exit 1
fi
count=$(find "$tmp/out" -type f -name '*.wasm' | wc -l)
echo "check-reproducible.sh: OK: all $count components are byte-identical to a rebuild at another path" >&2
