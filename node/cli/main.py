"""The ``fedchain`` command line.

Each command group lives in its own module and registers itself through ``COMMANDS`` so
the parser stays one small table; every failure exits non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from node import __version__
from node.cli.common import CLIError
from node.cli.data import register_data
from node.cli.model import register as register_model
from node.cli.node import register_init, register_status, register_testnet
from node.cli.start import register_start
from node.cli.tx import register as register_tx
from node.core.crypto import KeyFileError, PrivateKey

__all__ = ["COMMANDS", "CLIError", "build_parser", "main"]

NODE_KEY = "node_key.json"
VALIDATOR_KEY = "validator_key.json"


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"fedchain {__version__}")
    return 0


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    home = Path(args.home)
    names = [VALIDATOR_KEY, NODE_KEY] if args.kind == "all" else [f"{args.kind}_key.json"]
    made = {}
    for name in names:
        path = home / name
        if path.exists() and not args.force:
            raise CLIError(f"{path} exists; pass --force to replace it (the old key is lost)")
        key = PrivateKey.generate()
        key.save(path, overwrite=args.force)
        made[name] = key.address.hex()
    for name, addr in made.items():
        print(f"{home / name}: address {addr}")
    return 0


def _cmd_keys_show(args: argparse.Namespace) -> int:
    home = Path(args.home)
    out = {}
    for name in (VALIDATOR_KEY, NODE_KEY):
        path = home / name
        if not path.exists():
            continue
        try:
            key = PrivateKey.load(path)
        except KeyFileError as e:
            raise CLIError(str(e)) from e
        doc = key.to_json()
        doc.pop("private_key")
        out[name.removesuffix("_key.json")] = doc
    if not out:
        raise CLIError(f"no keys in {home} (run `fedchain keys generate --home {home}`)")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for kind, doc in out.items():
            print(f"{kind}: address {doc['address']}  public key {doc['public_key']}")
    return 0


def _register_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="generate or show this node's keys")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    gen = ksub.add_parser("generate", help="create new Ed25519 keys in --home (mode 0600)")
    gen.add_argument("--home", required=True, help="node home directory")
    gen.add_argument(
        "--kind",
        choices=["validator", "node", "all"],
        default="all",
        help="validator (account + consensus) key, node (p2p identity) key, or both",
    )
    gen.add_argument("--force", action="store_true", help="replace existing keys")
    gen.set_defaults(func=_cmd_keys_generate)
    show = ksub.add_parser("show", help="print addresses and public keys")
    show.add_argument("--home", required=True, help="node home directory")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_cmd_keys_show)


def _register_version(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("version", help="print the fedchain version")
    v.set_defaults(func=_cmd_version)


# Command groups add themselves here (name order is the --help order).
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    register_data,
    register_init,
    _register_keys,
    register_model,
    register_start,
    register_status,
    register_testnet,
    register_tx,
    _register_version,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedchain",
        description="Decentralized federated learning on a BFT blockchain.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
