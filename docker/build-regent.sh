#!/bin/sh
# Puts the regent binary for the lab image at $3, in the Dockerfile's build stage.
#   $1 = source:   build it from the repository with cargo (the builder image is a Rust image)
#   $1 = prebuilt: take $2 (a path in the build context, by default target/release/regent), a
#                  binary built on a Debian bookworm host (or any with glibc 2.36 or older)
set -eu
mode=$1 binary=$2 out=$3
mkdir -p "$(dirname "$out")"
case $mode in
    prebuilt)
        if [ ! -x "$binary" ]; then
            echo "build-regent: REGENT=prebuilt, but there is no $binary in the build context." \
                 "Build it on the host first: cargo build --release" >&2
            exit 1
        fi
        cp "$binary" "$out"
        ;;
    source)
        if ! command -v cargo >/dev/null; then
            echo "build-regent: REGENT=source needs a Rust builder image, but this one has no cargo." \
                 "Offline, use a prebuilt binary instead: see docker/offline.env" >&2
            exit 1
        fi
        if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
            apt-get -q update
            DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
                protobuf-compiler libprotobuf-dev
        fi
        cargo build --release --locked -p regent --bin regent
        cp target/release/regent "$out"
        ;;
    *)
        echo "build-regent: REGENT must be 'source' or 'prebuilt', not '$mode'" >&2
        exit 2
        ;;
esac
if command -v strip >/dev/null; then strip "$out"; fi
"$out" --version
