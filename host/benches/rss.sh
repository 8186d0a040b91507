#!/usr/bin/env bash
# Measure the resident memory of a real `regent run` node with two WebAssembly policies loaded
# (target: <= 20 MiB): a real etcd and a real PostgreSQL, one node that bootstraps the cluster
# and leads it, `regent.policies: [zone-aware, replication-guard]` from a copy of policies/.
# Once the node leads and its policies serve, wait SETTLE seconds, then read VmRSS (and VmHWM,
# the peak) of the `regent` process from /proc: after a cold start (policies compiled), after a
# restart (compiled artifacts from the cache), and after a hot reload of the first policy (a new
# component, renamed into place) in that restarted node.
#
# Usage: host/benches/rss.sh [POLICY...]     (default: zone-aware replication-guard)
#   SETTLE=20   seconds to let the node settle before reading
#   KEEP=1      keep the temporary directory (configs, logs)
#   SMAPS=1     also list the largest resident mappings
# Needs etcd and PostgreSQL (/usr/lib/postgresql/*/bin); builds `regent` in release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd -P)
policies=("$@")
[ ${#policies[@]} -gt 0 ] || policies=(zone-aware replication-guard)
settle=${SETTLE:-20}

die() { echo "rss.sh: $*" >&2; exit 2; }
command -v etcd >/dev/null || die "etcd is not installed"
bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin_dir/initdb" ] || die "no PostgreSQL under /usr/lib/postgresql/*/bin"

cargo build --release --bin regent >&2
regent=$root/target/release/regent

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/regent-rss.XXXXXX")
chmod 755 "$tmp"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "rss.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); pg_port=$(free_port)
etcd --name e0 --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e0=http://127.0.0.1:$peer_port" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 30))
until curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$tmp/etcd.log" >&2; die "etcd did not start within 30 s"; }
    sleep 0.2
done

# A copy of the policies, so that the hot reload does not touch the repository's.
cp -r "$root/policies" "$tmp/policies"

node=$tmp/node1
mkdir -p "$node"
chmod 755 "$node"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$node"
list=$(IFS=,; echo "${policies[*]}")
cat >"$node/regent.yml" <<EOF
scope: rss
namespace: /service/
name: node1
restapi:
  listen: 127.0.0.1:$api_port
  connect_address: 127.0.0.1:$api_port
etcd3:
  hosts: [127.0.0.1:$etcd_port]
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 md5
    - host replication replicator 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:$pg_port
  connect_address: 127.0.0.1:$pg_port
  data_dir: $node/data
  bin_dir: $bin_dir
  authentication:
    superuser: {username: postgres, password: secret}
    replication: {username: replicator, password: rep-pass}
  parameters:
    shared_buffers: 16MB
tags:
  zone: eu-1
regent:
  policies_dir: $tmp/policies
  policies: [$list]
EOF

# Print the memory of process PID after SETTLE seconds.
report() { # LABEL PID
    local pid=$2
    sleep "$settle"
    local rss hwm threads
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    printf '%-34s VmRSS %6.1f MiB   VmHWM %6.1f MiB   threads %s\n' \
        "$1 ($list)" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" "$threads"
    # What the policies did meanwhile (GET /policy).
    curl -fs "http://127.0.0.1:$api_port/policy" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["policies"]:
    c = p["compile"]
    print("  %s %s: %s code (first %s, %s), calls %s, faults %s" % (p["name"], p["version"],
        c["tier"], c["first"]["tier"], c["first"]["source"], p["calls"], p["faults"]["count"]))'
    if [ -n "${SMAPS:-}" ]; then
        # Resident kB by mapping (permissions and file), the largest first.
        awk '/^[0-9a-f]+-/ {name=$2 " " ($6 == "" ? "[anon]" : $6)} /^Rss:/ {rss[name]+=$2}
             END {for (n in rss) if (rss[n] > 256) printf "  %8d kB  %s\n", rss[n], n}' \
            "/proc/$pid/smaps" | sort -rn | head -n 12
    fi
}

policy_json() { curl -fs "http://127.0.0.1:$api_port/policy" 2>/dev/null || true; }

# Start the node (its pid in $pid) and wait until it leads with its policies serving.
start() {
    "$regent" run "$node/regent.yml" >>"$node/regent.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    local deadline=$((SECONDS + 120))
    until curl -fs "http://127.0.0.1:$api_port/primary" >/dev/null 2>&1 \
        && policy_json | grep -q '"policies"'; do
        [ $SECONDS -lt $deadline ] || { tail -n 30 "$node/regent.log" >&2; die "the node did not lead within 120 s"; }
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$node/regent.log" >&2; die "regent exited"; }
        sleep 0.5
    done
}

stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; }

echo "rss.sh: load $(cut -d' ' -f1-3 /proc/loadavg); regent $(stat -c %s "$regent") bytes" >&2
start
report "cold start" "$pid"
stop

start
report "restart (artifact cache)" "$pid"
# A new version of the first policy: the same component with a custom section appended
# (id 0, size 10: name length 3, "rss", payload "reload"), written elsewhere and renamed into place.
first=${policies[0]}
cp "$tmp/policies/$first.wasm" "$tmp/policies/.$first.wasm.tmp"
printf '\x00\x0a\x03rssreload' >>"$tmp/policies/.$first.wasm.tmp"
mv "$tmp/policies/.$first.wasm.tmp" "$tmp/policies/$first.wasm"
deadline=$((SECONDS + 60))
until policy_json | grep -q '"ok":1'; do
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$node/regent.log" >&2; die "the reload did not happen within 60 s"; }
    sleep 0.2
done
report "after a hot reload of $first" "$pid"
stop
