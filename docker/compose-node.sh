#!/bin/sh
# Entry point of the node services in docker-compose.yml: take this node's home from the
# shared init volume into the node's own volume on first start, then become the daemon.
#
# Why copy: each node keeps its chain in its own volume (a SIGKILLed or recreated
# container restarts from its own state), while the init service writes every home into
# one shared volume. Later starts find config.toml in the node volume and copy nothing.
# The home carries the node's own training shard (train_data/, its fl.data_dir, split by
# the init service); no MNIST copy is mounted here, and a home without its shard makes
# `fedchain start` stop with one line saying so.
# `exec` makes `fedchain start` the process that tini (`init: true`) signals on stop.
#
# Environment (set by docker-compose.yml):
#   FEDCHAIN_NODE_NAME     this node's home under the shared volume (node0, node1, ...)
#   FEDCHAIN_TESTNET_DIR   shared volume written by the init service (default /testnet)
#   FEDCHAIN_HOME          this node's own volume                 (default /home/fedchain/node)
#   FEDCHAIN_INIT_TIMEOUT  seconds to wait for the init service   (default 300)
set -eu

name="${FEDCHAIN_NODE_NAME:?FEDCHAIN_NODE_NAME must name this node, e.g. node0}"
shared="${FEDCHAIN_TESTNET_DIR:-/testnet}"
home="${FEDCHAIN_HOME:-/home/fedchain/node}"
timeout="${FEDCHAIN_INIT_TIMEOUT:-300}"

if [ ! -f "$home/config.toml" ]; then
    waited=0
    until [ -f "$shared/.compose-initialised" ]; do
        if [ "$waited" -ge "$timeout" ]; then
            echo "error: no initialised testnet in $shared after ${timeout}s (did the init service fail? see: docker-compose logs init)" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if [ ! -f "$shared/$name/config.toml" ]; then
        echo "error: $shared/$name/config.toml does not exist; the testnet has other node names" >&2
        exit 1
    fi
    cp -R "$shared/$name/." "$home/"
    echo "copied home of $name from $shared into $home"
fi

exec fedchain start --home "$home" "$@"
