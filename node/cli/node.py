"""``fedchain init``, ``fedchain testnet init`` and ``fedchain status``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from node.cli.common import CLIError, add_node_args, node_url, positive_int
from node.cli.data import fetch_mnist_once
from node.cli.testnet import register_testnet_run
from node.home import HomeError, init_home, testnet_init
from node.rpc.client import RPCClient, RPCClientError

__all__ = ["register_init", "register_status", "register_testnet", "testnet_group"]


def _cmd_init(args: argparse.Namespace) -> int:
    try:
        home = init_home(
            Path(args.home),
            moniker=args.moniker,
            genesis_file=Path(args.genesis) if args.genesis else None,
            chain_id=args.chain_id,
        )
        peer = home.peer_id()
        addr = home.validator_key().address.hex()
        chain = home.genesis().chain_id
    except HomeError as e:
        raise CLIError(str(e)) from e
    print(f"initialised {home.path} for chain {chain}")
    print(f"  validator address: {addr}")
    print(f"  peer id:           {peer}")
    if not args.genesis:
        print("  genesis: a single-validator development chain (solo engine)")
    return 0


def register_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="create a node home: keys, config.toml and genesis.json",
        description="Create a node home. With --genesis the node joins that network; "
        "without it, it gets its own single-validator development chain.",
    )
    p.add_argument("--home", required=True, help="the new home directory")
    p.add_argument("--genesis", help="the network's genesis.json to join (validated, copied)")
    p.add_argument("--moniker", help="human-readable node name (default: node)")
    p.add_argument("--chain-id", help="chain id of the dev chain (must match --genesis if given)")
    p.set_defaults(func=_cmd_init)


def _cmd_testnet_init(args: argparse.Namespace) -> int:
    hostnames = args.hostnames.split(",") if args.hostnames else None
    mnist = fetch_mnist_once(args.data_dir)
    try:
        homes = testnet_init(
            Path(args.dir),
            args.nodes,
            engine=args.engine,
            partition=args.partition,
            model=args.model,
            chain_id=args.chain_id,
            base_port=args.base_port,
            host=args.host,
            hostnames=hostnames,
            fl_data_dir=str(mnist),
        )
    except HomeError as e:
        raise CLIError(str(e)) from e
    print(f"created {len(homes)} node homes in {args.dir} (chain {args.chain_id})")
    for i, h in enumerate(homes):
        cfg = h.config()
        print(f"  node{i}: p2p {cfg.p2p.listen}  rpc {cfg.rpc.listen}  peer {h.peer_id()}")
    return 0


def testnet_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``testnet`` command group's subparsers (``node.cli.testnet`` adds ``up``, ``down``)."""
    t = sub.add_parser("testnet", help="create (and run) a multi-node test network")
    return t.add_subparsers(dest="testnet_cmd", required=True)


def register_testnet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tsub = testnet_group(sub)
    p = tsub.add_parser(
        "init",
        help="generate N node homes sharing one genesis",
        description="Generate DIR/node0..nodeN-1, each a validator (equal stake) and a "
        "trainer, peered with every other node. Node i listens for p2p on base-port+2i and "
        "serves RPC on base-port+2i+1; with --hostnames (docker-compose) every node uses "
        "the base ports and peers are addressed by hostname.",
    )
    p.add_argument("--nodes", type=positive_int, required=True, help="number of nodes")
    p.add_argument("--dir", required=True, help="directory for the homes (must be new or empty)")
    p.add_argument("--engine", default="tendermint", help="consensus engine (tendermint|solo)")
    p.add_argument("--partition", default="iid", help="iid | dirichlet:ALPHA | shards:K")
    p.add_argument("--model", default="cnn", help="model architecture (default cnn)")
    p.add_argument("--chain-id", default="fedchain-testnet", help="chain id")
    p.add_argument("--base-port", type=positive_int, default=26656, help="first port")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--host", default="127.0.0.1", help="IPv4 address all nodes run on")
    where.add_argument("--hostnames", help="comma-separated hostnames (docker-compose)")
    p.add_argument(
        "--data-dir",
        help="full MNIST copy each node's shard (DIR/nodeI/train_data) is split from "
        "(default: $FEDCHAIN_DATA_DIR, else the cache, downloaded once)",
    )
    p.set_defaults(func=_cmd_testnet_init)
    register_testnet_run(tsub)


# --------------------------------------------------------------------------- status


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _cmd_status(args: argparse.Namespace) -> int:
    client = RPCClient(node_url(args), timeout=args.timeout)
    try:
        st = client.get_json("/status")
    except RPCClientError as e:
        raise CLIError(str(e)) from e
    if not isinstance(st, dict):
        raise CLIError(f"{client.url}/status returned an unexpected answer")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedchain node at {client.url}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in st.items():
        table.add_row(key, _fmt(value))
    Console().print(table)
    return 0


def register_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show a node's height, peers, FL round and accuracy")
    add_node_args(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
    p.set_defaults(func=_cmd_status)
