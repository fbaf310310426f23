"""Wait until the nodes of a running testnet agree, polling their HTTP RPC (stdlib only).

Used by scripts/compose_e2e.sh against the RPC ports docker-compose publishes on
127.0.0.1, and usable by hand against any testnet:

    python3 scripts/compose_check.py healthy --timeout 180 http://127.0.0.1:26657 ...
    python3 scripts/compose_check.py agree --min-round 2 --timeout 900 URL URL URL URL
    python3 scripts/compose_check.py height URL

``agree`` succeeds once every node answers, every node reports an FL round of at least
``--min-round``, and all nodes hold the same block hash at the highest height they all
have (which must be at least ``--min-height``). Agreement is checked on a common height
rather than on each node's latest block because healthy nodes are routinely a block
apart. Every wait is bounded; on timeout the script prints what each node last said and
exits 1, so a CI job fails with a reason instead of hanging.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# RPC field names (GET /status and GET /blocks/{height}), in one place.
STATUS_HEIGHT = "latest_height"
STATUS_ROUND = "fl_round"
BLOCK_HASH = "hash"
REQUEST_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 2.0


class CheckError(Exception):
    """A node answered something unusable (wrong shape, not JSON, HTTP error)."""


@dataclass(frozen=True)
class NodeStatus:
    url: str
    height: int
    fl_round: int


def get_json(url: str) -> Any:
    """GET ``url`` and decode JSON; CheckError on HTTP errors or non-JSON bodies."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
            body = resp.read(4 << 20)
    except urllib.error.HTTPError as e:
        raise CheckError(f"{url}: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        raise CheckError(f"{url}: {getattr(e, 'reason', e)}") from e
    try:
        return json.loads(body)
    except ValueError as e:
        raise CheckError(f"{url}: not JSON ({e})") from e


def _int_field(doc: Any, key: str, url: str) -> int:
    value = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckError(f"{url}: no integer {key!r} in {str(doc)[:200]}")
    return value


def node_status(base: str) -> NodeStatus:
    url = f"{base.rstrip('/')}/status"
    doc = get_json(url)
    return NodeStatus(base, _int_field(doc, STATUS_HEIGHT, url), _int_field(doc, STATUS_ROUND, url))


def block_hash(base: str, height: int) -> str:
    url = f"{base.rstrip('/')}/blocks/{height}"
    doc = get_json(url)
    value = doc.get(BLOCK_HASH) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise CheckError(f"{url}: no {BLOCK_HASH!r} string in {str(doc)[:200]}")
    return value


def poll_agreement(urls: list[str], min_round: int, min_height: int) -> tuple[bool, str]:
    """One poll: (done, a one-line description of where the nodes stand)."""
    statuses = [node_status(u) for u in urls]
    common = min(s.height for s in statuses)
    rounds = ", ".join(f"{s.url} h={s.height} r={s.fl_round}" for s in statuses)
    if common < max(min_height, 1):
        return False, f"common height {common} < {max(min_height, 1)}: {rounds}"
    hashes = {u: block_hash(u, common) for u in urls}
    if len(set(hashes.values())) != 1:
        # A fork would be a safety bug, not a matter of waiting: fail immediately.
        detail = ", ".join(f"{u}={h}" for u, h in hashes.items())
        raise SystemExit(f"FAIL: nodes disagree on block {common}: {detail}")
    if min(s.fl_round for s in statuses) < min_round:
        return False, f"FL round below {min_round}: {rounds}"
    return True, f"all agree on block {common} hash {next(iter(hashes.values()))}: {rounds}"


def wait(what: str, timeout: float, poll: Callable[[], tuple[bool, str]]) -> int:
    """Call ``poll`` until it reports done or ``timeout`` passes; the exit status."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            done, last = poll()
        except CheckError as e:
            done, last = False, str(e)
        if done:
            print(f"ok: {last}")
            return 0
        if time.monotonic() >= deadline:
            print(f"FAIL: {what} within {timeout:.0f}s; last: {last}", file=sys.stderr)
            return 1
        time.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("healthy", help="wait until every node's GET /status answers")
    a = sub.add_parser("agree", help="wait until all nodes agree at a common height")
    g = sub.add_parser("height", help="print one node's latest height")
    g.add_argument("url", help="RPC base URL")
    a.add_argument("--min-round", type=int, default=0, help="lowest FL round on every node")
    a.add_argument("--min-height", type=int, default=1, help="lowest common height")
    for p in (h, a):
        p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
        p.add_argument("urls", nargs="+", help="RPC base URLs, e.g. http://127.0.0.1:26657")
    args = parser.parse_args(argv)
    if args.cmd == "height":
        try:
            print(node_status(args.url).height)
        except CheckError as e:
            print(f"FAIL: {e}", file=sys.stderr)
            return 1
        return 0
    urls: list[str] = args.urls
    if args.cmd == "healthy":

        def poll_healthy() -> tuple[bool, str]:
            statuses = [node_status(u) for u in urls]
            return True, ", ".join(f"{s.url} h={s.height}" for s in statuses)

        return wait("node did not become healthy", args.timeout, poll_healthy)
    return wait(
        f"nodes did not agree at FL round >= {args.min_round}",
        args.timeout,
        lambda: poll_agreement(urls, args.min_round, args.min_height),
    )


if __name__ == "__main__":
    sys.exit(main())
