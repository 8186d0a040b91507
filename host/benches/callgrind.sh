#!/usr/bin/env bash
# Count the instructions of one policy call with callgrind: repeatable where wall-clock medians
# on a shared machine are not. Builds the `policy` benchmark (release), then runs each case
# under valgrind with REGENT_CALLGRIND=<case> (see host/benches/policy.rs) and prints the
# instructions per call (Ir of `measured`, divided by its number of calls).
#
# Usage: host/benches/callgrind.sh [CASE...]
#   default cases: rank:builtin-default rank:test-guest rank-no-tags:test-guest
#                  rank:patroni-default rank:zone-aware health:test-guest
# Needs valgrind. Callgrind output files go to a temporary directory (kept with KEEP=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(rank:builtin-default rank:test-guest rank-no-tags:test-guest
                                 rank:patroni-default rank:zone-aware health:test-guest)
bin=$(cargo bench --bench policy --no-run --message-format=json 2>/dev/null \
    | grep '"kind":\["bench"\]' | grep '"name":"policy"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "callgrind.sh: cannot find the benchmark binary" >&2; exit 2; }
out=$(mktemp -d "${TMPDIR:-/tmp}/regent-callgrind.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "callgrind.sh: output in $out" >&2 || trap 'rm -rf "$out"' EXIT
calls=$(sed -n 's/^const CALLS: u32 = \([0-9]*\);/\1/p' benches/policy.rs)
for c in "${cases[@]}"; do
    file=$out/${c//:/_}.out
    REGENT_CALLGRIND=$c valgrind --tool=callgrind --callgrind-out-file="$file" \
        --collect-atstart=no --toggle-collect='policy::measured' "$bin" >/dev/null 2>"$file.log" \
        || { echo "callgrind.sh: $c failed (see below)" >&2; tail -n 20 "$file.log" >&2; exit 1; }
    total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file")
    printf '%-28s %10d instructions per call\n' "$c" $(( total / calls ))
done
