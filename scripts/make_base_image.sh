#!/usr/bin/env bash
# Build a local Python 3.11 base image for the fedchain node image without any
# container registry.
#
# Why: the Dockerfile's default base (python:3.11-slim) comes from Docker Hub,
# which is unreachable on air-gapped or registry-less machines. Debian's apt
# mirror usually still is, so we bootstrap a minimal Debian bookworm root
# filesystem (its python3 is 3.11, as the project requires) with debootstrap
# and turn it into an image with `docker import`. Build the node image on top:
#
#   scripts/make_base_image.sh                       # -> fedchain-base:bookworm
#   docker build --build-arg BASE_IMAGE=fedchain-base:bookworm -t fedchain:latest .
#
# Idempotent: does nothing when the image already exists (pass --force to
# rebuild). Needs root (debootstrap chroots) and a running Docker engine.
# Installs debootstrap with apt-get when it is missing.
#
# Environment:
#   FEDCHAIN_BASE_IMAGE  image tag to create      (default fedchain-base:bookworm)
#   DEBIAN_SUITE         Debian release           (default bookworm)
#   DEBIAN_MIRROR        apt mirror               (default http://deb.debian.org/debian)
set -euo pipefail

image="${FEDCHAIN_BASE_IMAGE:-fedchain-base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=0

for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "make_base_image.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

if [[ $force -eq 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already exists (use --force to rebuild)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "make_base_image.sh: debootstrap needs root; run it with sudo" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi

rootfs="$(mktemp -d /tmp/fedchain-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT

echo "bootstrapping Debian $suite into $rootfs (a few minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror"

# Drop what an image never needs: downloaded packages, package lists, docs.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/locale/*
# debootstrap leaves the build host's resolver config behind; Docker mounts its own.
: >"$rootfs/etc/resolv.conf"

echo "importing $rootfs as $image"
tar --numeric-owner -C "$rootfs" -c . |
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        --message "debootstrap $suite minbase + python3 (scripts/make_base_image.sh)" \
        - "$image"
docker run --rm "$image" python3 -c 'import sys, venv; print("python", sys.version.split()[0])'
echo "built $image"
