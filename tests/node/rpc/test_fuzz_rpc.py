"""A short run of scripts/fuzz_rpc.py against a live RPC server: every malformed request
gets a typed refusal, never a 500, and the node changes nothing and keeps answering."""

from __future__ import annotations

import random

from node.rpc.connections import ConnectionLimits
from node.rpc.server import RPCServer
from scripts.fuzz_rpc import _judge, fuzz, make_case
from tests.node.nodekit import MAX_BODY, RunningNode


async def test_malformed_requests_get_typed_refusals(node: RunningNode) -> None:
    before = (node.ledger.height, node.ledger.app_hash(), len(node.mempool))
    server = RPCServer(
        node.view,
        "127.0.0.1",
        0,
        max_body_bytes=MAX_BODY,
        body_timeout=2,
        limits=ConnectionLimits(header_timeout=2, idle_timeout=2),
    )
    await server.start()
    try:
        report = await fuzz(server.url, cases=400, seed=15, max_body=MAX_BODY, timeout=10)
    finally:
        await server.close()
    assert report.findings == [], "\n".join(f"[{f.case}] {f.problem}" for f in report.findings)
    assert report.cases == 400
    # The run reached the handlers, not only aiohttp's parser: typed refusals of each kind.
    for status in (400, 403, 404, 405, 413, 415):
        assert report.statuses.get(status), (status, report.statuses)
    assert (node.ledger.height, node.ledger.app_hash(), len(node.mempool)) == before


def test_the_judge_flags_server_errors_and_untyped_errors() -> None:
    head = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n"
    ok = head + b'{"error": {"code": "x", "message": "y"}}'
    assert _judge(ok) == (404, None)
    assert _judge(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")[1]
    untyped = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{}"
    assert _judge(untyped)[1]
    assert _judge(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nbad")[1] is None
    assert _judge(b"garbage")[1]
    kinds = {make_case(random.Random(i), "h:1", 100)[0] for i in range(200)}
    assert len(kinds) == 9  # every kind of case is drawn
