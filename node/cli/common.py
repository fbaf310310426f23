"""Helpers shared by the CLI command modules.

``CLIError`` lives here (and is re-exported by ``node.cli.main``) so that command modules
never import the parser module that imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.config import ConfigError, load_config

__all__ = ["DEFAULT_NODE_URL", "CLIError", "add_node_args", "node_url", "positive_int"]

DEFAULT_NODE_URL = "http://127.0.0.1:26657"


class CLIError(Exception):
    """A user-facing failure: printed without a traceback, exit status 1."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage error)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def add_node_args(p: argparse.ArgumentParser, *, home_required: bool = False) -> None:
    p.add_argument(
        "--home",
        required=home_required,
        help="node home directory (keys, config.toml, genesis.json)",
    )
    p.add_argument(
        "--node",
        help=f"RPC URL of the node (default: from --home's config.toml, else {DEFAULT_NODE_URL})",
    )


def node_url(args: argparse.Namespace) -> str:
    """--node, else the RPC address in --home's config.toml, else the default."""
    if getattr(args, "node", None):
        return str(args.node)
    home = getattr(args, "home", None)
    if home:
        path = Path(home) / "config.toml"
        if path.exists():
            try:
                return load_config(path).rpc_url()
            except ConfigError as e:
                raise CLIError(str(e)) from e
    return DEFAULT_NODE_URL
