"""``fedchain start --home DIR [--bootstrap MULTIADDR ...] [--dev]``: run a full node."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import re
from pathlib import Path

from node.cli.common import CLIError, positive_int
from node.config import Config, parse_host_port

__all__ = ["register_start"]


def _cmd_start(args: argparse.Namespace) -> int:
    # Imported here: the daemon pulls in torch and the whole network stack, which the
    # other commands do not need.
    from consensus.registry import UnknownEngineError
    from fl.data import DataError
    from node.config import ConfigError
    from node.core.crypto import KeyFileError
    from node.daemon import DaemonOptions, run_daemon
    from node.home import Home
    from node.ledger.genesis import GenesisError
    from node.p2p.host import install_uvloop
    from node.p2p.multiaddr import Multiaddr, MultiaddrError
    from node.store.chain import StoreError

    home = Path(args.home)
    if not (home / "config.toml").exists():
        raise CLIError(f"{home} is not a node home (no config.toml); run `fedchain init` first")
    try:
        cfg = Home(home).config()
        for a in args.bootstrap:
            if Multiaddr.parse(a).peer_id is None:
                raise CLIError(f"--bootstrap {a}: the address must end in /p2p/<peer id>")
    except (ConfigError, MultiaddrError) as e:
        raise CLIError(str(e)) from e
    level = args.log_level or cfg.log_level
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = DaemonOptions(
        dev=args.dev,
        bootstrap=tuple(args.bootstrap),
        max_train_samples=args.max_train_samples,
        eval_samples=args.eval_samples,
        release_code_pages=True,
    )
    install_uvloop()
    try:
        return asyncio.run(run_daemon(home, options))
    except OSError as e:
        raise CLIError(f"cannot start the node: {_os_error(e, cfg, home)}") from e
    except (
        DataError,
        ConfigError,
        GenesisError,
        KeyFileError,
        StoreError,
        UnknownEngineError,
        ValueError,
    ) as e:
        raise CLIError(f"cannot start the node: {e}") from e


def _os_error(e: OSError, cfg: Config, home: Path) -> str:
    """An OSError as something to act on: a port in use names the config key that set it."""
    if e.errno != errno.EADDRINUSE:
        return str(e)
    from node.p2p.multiaddr import Multiaddr

    ports = {
        "p2p.listen": (cfg.p2p.listen, Multiaddr.parse(cfg.p2p.listen).tcp_endpoint()[1]),
        "rpc.listen": (cfg.rpc.listen, parse_host_port(cfg.rpc.listen)[1]),
    }
    text = str(e)
    for key, (value, port) in ports.items():
        if re.search(rf"\b{port}\b", text):
            return (
                f"{key} {value}: port {port} is already in use (is another node running?); "
                f"stop whatever holds it or change {key} in {home / 'config.toml'}"
            )
    return f"{text}; stop whatever holds the port or change p2p.listen / rpc.listen"


def register_start(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "start",
        help="run a full node (p2p, consensus, ledger, FL worker, RPC) until SIGTERM/SIGINT",
        description="Run the node of --home in the foreground; SIGTERM or Ctrl-C stops it "
        "cleanly (committed blocks are always durable).",
    )
    p.add_argument("--home", required=True, help="node home directory (from `fedchain init`)")
    p.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="peer to join through, /ip4/HOST/tcp/PORT/p2p/PEERID (repeatable)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="single-node development chain: start consensus at once, no peer wait or sync",
    )
    p.add_argument(
        "--max-train-samples",
        type=positive_int,
        default=None,
        help="train on at most this many samples of this node's shard (quick demos, tests)",
    )
    p.add_argument(
        "--eval-samples",
        type=positive_int,
        default=None,
        help="test images used to report accuracy (default: config.toml fl.eval_samples)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    p.set_defaults(func=_cmd_start)
