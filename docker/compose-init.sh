#!/bin/sh
# One-shot `init` service of docker-compose.yml: generate the node homes and the shared
# genesis into the shared volume, exactly once.
#
# Why a script: `docker-compose up` runs this service on every start, and a second
# `testnet init` would mint new keys and a new genesis, orphaning the chains in the node
# volumes. The testnet is built in a staging directory and published with a marker file
# only when complete, so an interrupted run is simply redone.
#
# Environment (set by docker-compose.yml):
#   FEDCHAIN_TESTNET_DIR  shared volume                   (default /testnet)
#   FEDCHAIN_NODES        number of validators / nodes    (default 4; must match the services)
#   FEDCHAIN_ENGINE       consensus engine: tendermint | solo (empty: fedchain's default)
#   FEDCHAIN_PARTITION    iid | dirichlet:A | shards:K    (empty: fedchain's default)
#   FEDCHAIN_MODEL        model architecture name          (empty: fedchain's default)
#   FEDCHAIN_INIT_ARGS    extra arguments for `fedchain testnet init` (word-split)
#   FEDCHAIN_DATA_DIR     the full MNIST copy (a read-only bind mount); `testnet init`
#                         splits it so that every home holds only its own node's shard
set -eu

dir="${FEDCHAIN_TESTNET_DIR:-/testnet}"
nodes="${FEDCHAIN_NODES:-4}"
marker="$dir/.compose-initialised"

if [ -f "$marker" ]; then
    echo "testnet in $dir is already initialised; keeping its keys and genesis"
    exit 0
fi

data="${FEDCHAIN_DATA_DIR:-}"
if [ -n "$data" ] && [ ! -e "$data/train-images-idx3-ubyte" ] && [ ! -e "$data/train-images-idx3-ubyte.gz" ]; then
    echo "error: no MNIST in $data: set FEDCHAIN_MNIST_DIR to a host directory holding the four MNIST IDX files (see README, docker-compose section)" >&2
    exit 1
fi

hostnames=""
i=0
while [ "$i" -lt "$nodes" ]; do
    hostnames="${hostnames:+$hostnames,}node$i"
    i=$((i + 1))
done

staging="$dir/.staging"
rm -rf "$staging"
set -- testnet init --nodes "$nodes" --dir "$staging" --hostnames "$hostnames"
if [ -n "${FEDCHAIN_ENGINE:-}" ]; then set -- "$@" --engine "$FEDCHAIN_ENGINE"; fi
if [ -n "${FEDCHAIN_PARTITION:-}" ]; then set -- "$@" --partition "$FEDCHAIN_PARTITION"; fi
if [ -n "${FEDCHAIN_MODEL:-}" ]; then set -- "$@" --model "$FEDCHAIN_MODEL"; fi
# shellcheck disable=SC2086  # FEDCHAIN_INIT_ARGS is a word list on purpose
set -- "$@" ${FEDCHAIN_INIT_ARGS:-}

echo "fedchain $*"
fedchain "$@"
for entry in "$staging"/* "$staging"/.[!.]*; do
    if [ -e "$entry" ]; then
        rm -rf "${dir:?}/$(basename "$entry")"
        mv "$entry" "$dir/"
    fi
done
rmdir "$staging"
touch "$marker"
echo "testnet initialised in $dir"
