#!/usr/bin/env bash
# Count instructions with callgrind: repeatable where wall-clock medians on a shared machine are
# not. Builds the `policy` benchmark (release), runs each case under valgrind with
# REGENT_CALLGRIND=<case> (see host/benches/policy.rs: the binary then runs that case's calls
# inside `measured` instead of criterion), and prints the instructions per call: every
# thread's instructions between entering and leaving `measured`, divided by its calls.
#
# Usage: host/benches/callgrind.sh [CASE...]
#   cases: rank:<policy> (the 9-member view), rank-no-tags:<policy>, health:<policy>,
#          rank:builtin-default, load:<policy> (compile, link, describe, configure, self-test)
#   default: rank:builtin-default rank:test-guest rank-no-tags:test-guest
#            rank:patroni-default rank:zone-aware health:test-guest
#   KEEP=1  keep the callgrind output (for callgrind_annotate); with REGENT_POLICY_PERFMAP=1
#           the guest functions' addresses are in /tmp/perf-<pid>.map
# Needs valgrind.
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
if [ "${KEEP:-0}" = 1 ]; then echo "callgrind.sh: output in $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
const() { sed -n "s/^const $1: u32 = \\([0-9]*\\);/\\1/p" benches/policy.rs; }
for c in "${cases[@]}"; do
    file=$out/${c//:/_}.out
    # Zero the counters on entering `measured`, dump them on leaving it (file.1).
    REGENT_CALLGRIND=$c valgrind --tool=callgrind --callgrind-out-file="$file" \
        --zero-before='policy::measured' --dump-after='policy::measured' \
        "$bin" >/dev/null 2>"$file.log" \
        || { echo "callgrind.sh: $c failed:" >&2; tail -n 20 "$file.log" >&2; exit 1; }
    total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file.1")
    case $c in load:*) n=$(const CALLS_LOAD) ;; *) n=$(const CALLS) ;; esac
    printf '%-28s %12d instructions per call\n' "$c" $(( total / n ))
done
