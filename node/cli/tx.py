"""``fedchain tx transfer|stake|unstake``: sign with the home's validator key and submit.

The nonce comes from the node (``/accounts``, counting this sender's pending txs, so
several commands in a row do not collide), the chain id from ``/status``, and the fee is
the genesis minimum for the signed size unless ``--fee`` is given. Fee parameters are read
from the home's ``genesis.json`` when it is for the same chain, else from ``/genesis``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from node.cli.common import CLIError, add_node_args, node_url, positive_int
from node.core.codec import CodecError
from node.core.crypto import KeyFileError, PrivateKey, parse_address
from node.home import GENESIS_FILE, VALIDATOR_KEY
from node.ledger.genesis import FeeParams, Genesis, GenesisError, load_genesis
from node.ledger.tx import Body, Stake, Transfer, Unstake, sign_tx
from node.rpc.client import RPCClient, RPCClientError

__all__ = ["register"]


def _fee_params(home: Path, chain_id: str, client: RPCClient) -> FeeParams:
    path = home / GENESIS_FILE
    if path.exists():
        try:
            g = load_genesis(path)
        except GenesisError as e:
            raise CLIError(str(e)) from e
        if g.chain_id == chain_id:
            return g.fees
    try:
        return Genesis.from_json(client.get_json("/genesis")).fees
    except GenesisError as e:
        raise CLIError(f"the node's /genesis is invalid: {e}") from e


def _body(args: argparse.Namespace) -> Body:
    if args.tx_cmd == "transfer":
        try:
            to = parse_address(args.to)
        except ValueError as e:
            raise CLIError(f"--to: {e}") from e
        return Transfer(to, args.amount)
    if args.tx_cmd == "stake":
        return Stake(args.amount)
    return Unstake(args.amount)


def _cmd_tx(args: argparse.Namespace) -> int:
    home = Path(args.home)
    try:
        key = PrivateKey.load(home / VALIDATOR_KEY)
    except KeyFileError as e:
        raise CLIError(str(e)) from e
    body = _body(args)
    client = RPCClient(node_url(args), timeout=args.timeout)
    try:
        status = client.get_json("/status")
        chain_id = str(status["chain_id"])
        acct = client.get_json(f"/accounts/{key.address.hex()}")
        nonce = int(acct["next_nonce"])
        fee: int | FeeParams = (
            args.fee if args.fee is not None else _fee_params(home, chain_id, client)
        )
        try:
            tx = sign_tx(key, chain_id, nonce, fee, body)
        except CodecError as e:
            raise CLIError(f"cannot build the transaction: {e}") from e
        result: dict[str, Any] = client.post_tx(tx.encode())
    except RPCClientError as e:
        raise CLIError(f"transaction not accepted: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise CLIError(f"unexpected answer from {client.url}: {e}") from e
    out = {
        "tx_hash": result.get("tx_hash", tx.hash.hex()),
        "type": args.tx_cmd,
        "sender": key.address.hex(),
        "nonce": nonce,
        "fee": tx.fee,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"submitted {args.tx_cmd} {out['tx_hash']} (nonce {nonce}, fee {tx.fee})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tx = sub.add_parser("tx", help="sign and submit a transaction")
    tsub = tx.add_subparsers(dest="tx_cmd", required=True)
    specs = {
        "transfer": "send tokens to another account",
        "stake": "bond tokens (enough stake makes this key a validator and/or trainer)",
        "unstake": "start unbonding tokens (returned after the unbonding period)",
    }
    for name, help_text in specs.items():
        p = tsub.add_parser(name, help=help_text, description=help_text)
        if name == "transfer":
            p.add_argument("--to", required=True, help="recipient address (40 hex digits)")
        p.add_argument("--amount", type=positive_int, required=True, help="amount in tokens")
        add_node_args(p, home_required=True)
        p.add_argument("--fee", type=positive_int, help="fee to pay (default: the minimum)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=_cmd_tx)
