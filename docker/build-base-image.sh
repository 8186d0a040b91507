#!/usr/bin/env bash
# Builds the lab's offline base image from Debian packages, for a machine that has Docker but
# no image registry: debootstrap a minimal Debian bookworm (variant minbase), install the
# packages of docker/packages.txt into it with docker/install-packages.sh (the same script the
# Dockerfile runs online), and `docker import` the result.
#
# Usage: docker/build-base-image.sh [--force]
#   --force   rebuild even if an image for the current package list exists
#
# The image is tagged regent-lab-base:bookworm and regent-lab-base:bookworm-<hash>, where the
# hash covers the package list and the two scripts. A second run with the same hash only
# re-tags (a second or so). Needs root, debootstrap and Docker.
#
# The Debian mirror is the one this machine's apt uses (/etc/apt/sources.list and
# /etc/apt/sources.list.d/), read at run time; REGENT_LAB_MIRROR=URL overrides it. apt's
# Acquire::Check-Valid-Until, Acquire::Check-Date and proxy settings are carried over too.
set -euo pipefail

SUITE=bookworm
REPO=regent-lab-base
IMAGE=$REPO:$SUITE
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

force=0
while [ $# -gt 0 ]; do
    case $1 in
        --force) force=1; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-base-image: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "build-base-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run it with sudo"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is dockerd running?)"

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
hash=$(cat "$here/packages.txt" "$here/install-packages.sh" "${BASH_SOURCE[0]}" \
       <(echo "$SUITE $arch") | sha256sum | cut -c1-12)
hash_tag=$IMAGE-$hash

# One build at a time on this machine; a second caller waits, then finds the image cached.
exec 9>/tmp/regent-lab-base.lock
flock -w 3600 9 || die "another build-base-image.sh holds /tmp/regent-lab-base.lock"

if [ "$force" = 0 ] && docker image inspect "$hash_tag" >/dev/null 2>&1; then
    docker tag "$hash_tag" "$IMAGE"
    say "$IMAGE is up to date ($hash_tag)"
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

# --- the mirror, from this machine's apt sources -------------------------------------------

# URI of the first enabled `deb` source for suite $1 (deb822 .sources, then one-line .list).
source_uri() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^#/) continue
                    if (match(line, /^[A-Za-z-]+:/)) {
                        key = tolower(substr(line, 1, RLENGTH - 1))
                        val = substr(line, RLENGTH + 1)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                }
                if (enabled ~ /no/ || (" " types " ") !~ /[ \t]deb[ \t]/) next
                if ((" " suites " ") !~ ("[ \t]" suite "[ \t]")) next
                split(uris, u, /[ \t]+/)
                for (j in u) if (u[j] != "") { print u[j]; exit }
            }' "$f" | head -n1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }' | grep . &&
            return 0
    done
    return 1
}

mirror=${REGENT_LAB_MIRROR:-}
from=REGENT_LAB_MIRROR
if [ -z "$mirror" ]; then
    from="this machine's apt sources"
    mirror=$(source_uri "$SUITE") ||
        die "this machine's apt sources name no '$SUITE' suite to debootstrap from: set" \
            "REGENT_LAB_MIRROR to a Debian mirror URL (the one in your sources.list)"
fi
say "Debian mirror: $mirror (from $from)"

# apt settings of this machine that the build needs too (a snapshot mirror's old Release
# files, a proxy).
apt_conf=
if command -v apt-config >/dev/null; then
    for key in Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy \
               Acquire::https::Proxy; do
        val=
        eval "$(apt-config shell val "$key")"
        [ -n "$val" ] && apt_conf+="$key \"$val\";"$'\n'
        if [ "$key" = Acquire::http::Proxy ] && [ -n "$val" ] && [ -z "${http_proxy:-}" ]; then
            export http_proxy=$val
        fi
    done
fi

# --- build ---------------------------------------------------------------------------------

work=$(mktemp -d /var/tmp/regent-lab-base.XXXXXX)
root=$work/root
cleanup() {
    local rc=$?
    if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
    rm -rf --one-file-system "$work"
    [ "$rc" = 0 ] || say "failed (exit $rc); removed $work"
}
trap cleanup EXIT

started=$(date +%s)
say "debootstrap $SUITE ($arch, minbase) into $root"
debootstrap --variant=minbase --arch="$arch" --include=ca-certificates \
    "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
}

# apt inside the root: the same mirrors as this machine, for the suite and its updates.
{
    for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
        uri=$mirror
        [ "$s" = "$SUITE" ] || uri=$(source_uri "$s") || continue
        echo "deb $uri $s main"
    done
} >"$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
printf '%s' "$apt_conf" >"$root/etc/apt/apt.conf.d/90regent-lab-host"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/tmp/regent-lab"
cp "$here/packages.txt" "$here/install-packages.sh" "$root/tmp/regent-lab/"
mount -t proc proc "$root/proc"

say "installing $(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \n' ' ')"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    chroot "$root" /bin/sh /tmp/regent-lab/install-packages.sh >"$work/install.log" 2>&1 || {
    tail -n 30 "$work/install.log" >&2
    die "installing the packages failed (log above)"
}
umount "$root/proc"

# What an image does not need or must not keep from this machine.
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
       "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/etc/hostname"

say "docker import as $hash_tag"
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "regent lab base: debootstrap $SUITE minbase + docker/packages.txt ($hash)" \
    - "$hash_tag" >/dev/null
docker tag "$hash_tag" "$IMAGE"

# Older builds of the base image (another package list) are no longer needed.
docker images --format '{{.Repository}}:{{.Tag}}' "$REPO" | while read -r old; do
    case $old in
        "$IMAGE"|"$hash_tag") ;;
        "$IMAGE"-*) docker rmi "$old" >/dev/null 2>&1 && say "removed the older $old" || true ;;
    esac
done

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "built $IMAGE ($hash_tag, $((size / 1024 / 1024)) MiB) in $(($(date +%s) - started)) s"
