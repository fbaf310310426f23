#!/usr/bin/env bash
# Build the fedchain node image, using whatever this machine offers to avoid downloads.
#
#   scripts/docker_build.sh                # base: $FEDCHAIN_BASE_IMAGE or python:3.11-slim
#   scripts/docker_build.sh --local-base   # base: made here by scripts/make_base_image.sh
#
# Why a script around `docker build`: two inputs are machine-specific and must never be
# baked into the Dockerfile or the image (see docker/wheels/README.md, docker/certs/README.md):
#   - a local CPU torch wheel (FEDCHAIN_TORCH_WHEEL, default the newest
#     /opt/wheels/torch-*+cpu-cp311-*.whl) is copied into docker/wheels/ so the build
#     downloads no PyTorch; without one the build uses PyTorch's CPU index;
#   - a CA bundle (FEDCHAIN_BUILD_CA_BUNDLE, else PIP_CERT) is copied into docker/certs/
#     when set, for pip behind a TLS-intercepting proxy.
# Both are read by the build stage only. The classic builder is used when BuildKit's
# buildx plugin is missing (docker-compose v1 uses the classic builder too).
#
# Environment: FEDCHAIN_IMAGE (default fedchain:latest), FEDCHAIN_BASE_IMAGE,
# FEDCHAIN_TORCH_WHEEL, FEDCHAIN_BUILD_CA_BUNDLE.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${FEDCHAIN_IMAGE:-fedchain:latest}"
base="${FEDCHAIN_BASE_IMAGE:-python:3.11-slim}"

for arg in "$@"; do
    case "$arg" in
        --local-base)
            base="${FEDCHAIN_BASE_IMAGE:-fedchain-base:bookworm}"
            FEDCHAIN_BASE_IMAGE="$base" "$root/scripts/make_base_image.sh"
            ;;
        -h | --help)
            sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "docker_build.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

# Prefer a local CPU torch wheel; keep exactly one torch wheel in docker/wheels/.
wheel="${FEDCHAIN_TORCH_WHEEL:-}"
if [[ -z "$wheel" ]]; then
    wheel="$(find /opt/wheels -maxdepth 1 -name 'torch-*+cpu-cp311-*.whl' 2>/dev/null | sort -V | tail -n 1)"
fi
if [[ -n "$wheel" && -f "$wheel" ]]; then
    name="$(basename "$wheel")"
    if [[ ! -f "$root/docker/wheels/$name" ]]; then
        find "$root/docker/wheels" -maxdepth 1 -name 'torch-*.whl' -delete
        echo "using local torch wheel $wheel"
        cp "$wheel" "$root/docker/wheels/$name"
    fi
fi

ca="${FEDCHAIN_BUILD_CA_BUNDLE:-${PIP_CERT:-}}"
rm -f "$root/docker/certs/host-ca.crt"
if [[ -n "$ca" && -f "$ca" ]]; then
    echo "passing the CA bundle $ca to the build stage"
    cp "$ca" "$root/docker/certs/host-ca.crt"
fi

if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

echo "building $image on $base"
start=$SECONDS
docker build --build-arg "BASE_IMAGE=$base" -t "$image" "$root"
# Superseded fedchain images (untagged by this build), each a full image with torch, would
# pile up; the unlabelled build-stage layers stay as the cache.
docker image prune -f --filter "label=org.opencontainers.image.title=fedchain" >/dev/null
size="$(docker image inspect --format '{{.Size}}' "$image")"
echo "built $image in $((SECONDS - start)) s; size $((size / 1000000)) MB"
