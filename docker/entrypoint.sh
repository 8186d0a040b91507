#!/bin/sh
# Entry point of the lab image, under tini (PID 1, which forwards SIGTERM and reaps orphans).
#   node  : wait until etcd answers, then run regent with /etc/regent/regent.yml (exec: regent
#           gets `docker stop`'s SIGTERM and hands over)
#   other : run the command as given (etcd, haproxy, a shell, ...)
set -eu

if [ "${1:-node}" != node ]; then
    exec "$@"
fi

config=${REGENT_CONFIG:-/etc/regent/regent.yml}
# Regent refuses to start while etcd is unreachable (a configuration that cannot work), so wait
# here: at `docker compose up` etcd starts alongside, and a node restarted during an etcd
# outage comes up once etcd is back.
etcd=${REGENT_LAB_ETCD:-etcd1:2379 etcd2:2379 etcd3:2379}
waited=0
until for e in $etcd; do
    curl -fsS -m 1 -o /dev/null "http://$e/health" && break
    false
done; do
    [ $((waited % 10)) -eq 0 ] && echo "regent-lab: waiting for etcd ($etcd)" >&2
    waited=$((waited + 1))
    sleep 1
done

exec regent run "$config"
