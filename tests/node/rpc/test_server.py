"""The RPC endpoints against a real ledger, and bad input that must change nothing."""

from __future__ import annotations

import json
import random
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fl.attacks import nan_update
from fl.update import ModelUpdate as FLUpdate
from fl.update import encode_update
from node.app.updates import payload_base
from node.ledger.tx import Stake, Transfer, sign_tx
from node.rpc.metrics import NodeMetrics
from node.services.status import ModelSnapshot, PeerInfo, PeerStanding, RoundStats
from node.store.models import ZERO_HASH
from tests.kits.updates import random_delta, signed_update
from tests.node.nodekit import MAX_BODY, RunningNode


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        body = await r.read()
        if r.content_type == "application/json":
            return r.status, json.loads(body)
        return r.status, body


async def _post(url: str, data: bytes, ctype: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/txs", data=data, headers={"Content-Type": ctype}) as r,
    ):
        assert r.content_type == "application/json"
        return r.status, await r.json()


def _snapshot(n: RunningNode) -> tuple[Any, ...]:
    """Everything a refused tx must leave untouched."""
    st = n.ledger.state
    accounts = tuple(st.account(k.address) for k in n.keys)
    return (n.ledger.height, n.ledger.app_hash(), accounts, len(n.mempool), n.mempool.size_bytes)


async def test_status(node: RunningNode) -> None:
    status, st = await _get(node.url + "/status")
    assert status == 200
    last = node.ledger.store.block(3)
    assert last is not None
    assert st["node_id"] == "12D3KooWtest" and st["moniker"] == "test-node"
    assert st["chain_id"] == "rpc-test"
    assert st["latest_height"] == 3
    assert st["latest_block_hash"] == last.hash.hex()
    assert st["app_hash"] == node.ledger.app_hash().hex()
    assert st["peers"] == 0 and st["catching_up"] is False
    assert st["fl_round"] == 0 and st["test_accuracy"] is None
    assert st["test_accuracy_round"] is None
    assert st["global_model_hash"] == node.ledger.state.meta.global_model.hex()


async def test_blocks(node: RunningNode) -> None:
    status, latest = await _get(node.url + "/blocks/latest")
    assert status == 200 and latest["height"] == 3 and latest["num_txs"] == 0
    status, b2 = await _get(node.url + "/blocks/2")
    block = node.ledger.store.block(2)
    assert block is not None
    assert status == 200
    assert b2["hash"] == block.hash.hex() == b2["header"]["hash"]
    assert b2["header"]["prev_hash"] == block.header.prev_hash.hex()
    assert [t["type"] for t in b2["txs"]] == ["transfer", "stake"]
    assert b2["txs"][0]["hash"] == block.txs[0].hash.hex()
    assert b2["txs"][0]["body"] == {"to": node.keys[2].address.hex(), "amount": 7}
    assert b2["txs"][1]["sender"] == node.keys[2].address.hex()
    assert len(b2["last_commit"]["signers"]) == 2
    _, b1 = await _get(node.url + "/blocks/1")
    assert b1["last_commit"] is None
    for bad, code in (("0", 404), ("4", 404), ("abc", 400), ("-1", 400), ("9" * 30, 400)):
        status, err = await _get(node.url + f"/blocks/{bad}")
        assert status == code, bad
        assert err["error"]["message"]


async def test_validators_accounts_peers(node: RunningNode) -> None:
    status, vs = await _get(node.url + "/validators")
    assert status == 200
    assert {v["address"] for v in vs["validators"]} == {k.address.hex() for k in node.keys[:2]}
    assert vs["total_power"] == sum(v["power"] for v in vs["validators"])
    status, _ = await _get(node.url + "/validators?height=x")
    assert status == 400
    status, _ = await _get(node.url + "/validators?height=1000")
    assert status == 404

    a = node.keys[0]
    status, acct = await _get(node.url + f"/accounts/{a.address.hex()}")
    assert status == 200
    want = node.ledger.state.account(a.address)
    assert (acct["balance"], acct["nonce"], acct["next_nonce"]) == (want.balance, 2, 2)
    _, trainer = await _get(node.url + f"/accounts/0x{node.keys[2].address.hex()}")
    assert trainer["stake"] == 500 and trainer["trainer"] is True
    status, err = await _get(node.url + "/accounts/xyz")
    assert status == 400 and err["error"]["code"] == "bad_address"

    node.view.list_peers = lambda: [PeerInfo("12D3KooWpeer", "/ip4/127.0.0.1/tcp/1", True)]
    _, peers = await _get(node.url + "/peers")
    assert peers == {
        "peers": [{"peer_id": "12D3KooWpeer", "address": "/ip4/127.0.0.1/tcp/1", "outbound": True}]
    }
    _, st = await _get(node.url + "/status")
    assert st["peers"] == 1

    standing = PeerStanding("12D3KooWpeer", False, 0, True, -12.5)
    node.view.standing_of = lambda p: standing if p == "12D3KooWpeer" else None
    status, doc = await _get(node.url + "/peers/12D3KooWpeer")
    assert status == 200
    assert doc == {
        "peer_id": "12D3KooWpeer",
        "connected": False,
        "connections": 0,
        "banned": True,
        "gossip_score": -12.5,
    }
    status, err = await _get(node.url + "/peers/nonsense")
    assert status == 400 and err["error"]["code"] == "bad_peer_id"


async def test_model_and_history(node: RunningNode) -> None:
    status, info = await _get(node.url + "/model/info")
    assert status == 200 and info["available"] is False
    status, err = await _get(node.url + "/model")
    assert status == 404 and err["error"]["code"] == "no_model"

    from fl.models import import_safetensors, init_params, model_hash

    params = init_params("cnn", 1)
    node.view.fl.snapshot = ModelSnapshot.from_params(4, "cnn", params)
    node.view.fl.history.append(RoundStats(4, 3, 2, 0.91, 0.3, 12.5, model_hash(params).hex()))
    _, info = await _get(node.url + "/model/info")
    assert info["available"] is True and info["round"] == 4
    assert info["model_hash"] == model_hash(params).hex()
    status, data = await _get(node.url + "/model")
    assert status == 200
    assert model_hash(import_safetensors(data, "cnn")) == model_hash(params)
    _, hist = await _get(node.url + "/fl/history")
    assert hist["rounds"] == [
        {
            "round": 4,
            "height": 3,
            "updates": 2,
            "accuracy": 0.91,
            "loss": 0.3,
            "seconds": 12.5,
            "model_hash": model_hash(params).hex(),
        }
    ]


async def test_submit_tx_binary_and_json(node: RunningNode) -> None:
    a, b, _ = node.keys
    g = node.genesis
    tx1 = sign_tx(a, g.chain_id, 2, g.fees, Transfer(b.address, 5))
    status, out = await _post(node.url, tx1.encode(), "application/octet-stream")
    assert status == 202 and out["tx_hash"] == tx1.hash.hex()
    assert tx1.hash in node.mempool
    tx2 = sign_tx(a, g.chain_id, 3, g.fees, Stake(10))
    body = json.dumps({"tx": tx2.encode().hex()}).encode()
    status, out = await _post(node.url, body, "application/json")
    assert status == 202 and tx2.hash in node.mempool
    _, acct = await _get(node.url + f"/accounts/{a.address.hex()}")
    assert acct["next_nonce"] == 4 and acct["pending_txs"] == 2
    before = _snapshot(node)
    status, err = await _post(node.url, tx1.encode(), "application/octet-stream")
    assert status == 409 and err["error"]["code"] == "already_known"
    assert _snapshot(node) == before


def _bad_inputs(node: RunningNode) -> list[tuple[bytes, str, int, str, str]]:
    """(body, content type, status, error code, words in the message)."""
    a, b, _ = node.keys
    g = node.genesis
    good = sign_tx(a, g.chain_id, 2, g.fees, Transfer(b.address, 5))
    raw = good.encode()
    bad_sig = good.replace(signature=bytes(64)).encode()
    other_chain = sign_tx(a, "other-chain", 2, g.fees, Transfer(b.address, 5)).encode()
    bad_nonce = sign_tx(a, g.chain_id, 7, g.fees, Transfer(b.address, 5)).encode()
    low_fee = sign_tx(a, g.chain_id, 2, 1, Transfer(b.address, 5)).encode()
    broke = sign_tx(a, g.chain_id, 2, g.fees, Transfer(b.address, 10**15)).encode()
    js = "application/json"
    bin_ = "application/octet-stream"
    return [
        (b"{not json", js, 400, "bad_json", "malformed JSON"),
        (b"[1, 2]", js, 400, "bad_request", "expected"),
        (b"[" * 5000, js, 400, "bad_json", "malformed JSON"),
        (b'{"tx": "\xff"}', js, 400, "bad_json", "malformed JSON"),
        (b'{"tx": "zz"}', js, 400, "bad_request", "not valid hex"),
        (b'{"tx": 5}', js, 400, "bad_request", "hex string"),
        (b'{"payload": "00"}', js, 400, "bad_request", "missing"),
        (b'{"tx": "00", "extra": 1}', js, 400, "bad_request", "expected"),
        (b"x" * (MAX_BODY + 1), bin_, 413, "body_too_large", f"exceeds {MAX_BODY} bytes"),
        (b"x" * 4000, bin_, 413, "too_large", "exceeds"),
        (b"", bin_, 400, "bad_tx", "empty"),
        (b"\x93\x01\x02\x03", bin_, 400, "bad_tx", "undecodable"),
        (raw[:-3], bin_, 400, "bad_tx", "undecodable"),
        (raw, "text/plain", 415, "unsupported_media_type", "octet-stream"),
        (bad_sig, bin_, 422, "bad_signature", "signature"),
        (json.dumps({"tx": bad_sig.hex()}).encode(), js, 422, "bad_signature", "signature"),
        (other_chain, bin_, 422, "wrong_chain", "other-chain"),
        (bad_nonce, bin_, 422, "bad_nonce", "nonce"),
        (low_fee, bin_, 422, "fee_too_low", "fee"),
        (broke, bin_, 422, "insufficient_funds", ""),
        (
            json.dumps({"tx": raw.hex(), "payload": "00"}).encode(),
            js,
            422,
            "payload_mismatch",
            "payload",
        ),
    ]


async def test_bad_txs_get_4xx_and_change_nothing(node: RunningNode) -> None:
    before = _snapshot(node)
    for body, ctype, status, code, words in _bad_inputs(node):
        got, err = await _post(node.url, body, ctype)
        assert (got, err["error"]["code"]) == (status, code), (body[:40], err)
        assert words in err["error"]["message"]
        assert _snapshot(node) == before
    rejected = node.view.metrics.mempool_rejected
    assert rejected.labels(reason="bad_signature")._value.get() == 2


async def test_random_and_mutated_bytes_never_crash_the_server(node: RunningNode) -> None:
    """Fuzz: garbage and bit-flipped valid txs get a 4xx and leave the state alone."""
    a, b, _ = node.keys
    g = node.genesis
    raw = bytearray(sign_tx(a, g.chain_id, 2, g.fees, Transfer(b.address, 5)).encode())
    rng = random.Random(6)
    before = _snapshot(node)
    async with aiohttp.ClientSession() as s:
        for i in range(150):
            if i % 2:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            else:
                data = bytearray(raw)
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                data = bytes(data)
            async with s.post(
                node.url + "/txs", data=data, headers={"Content-Type": "application/octet-stream"}
            ) as r:
                body = await r.json()
                # Any flip breaks the encoding, the signature or the chain id.
                assert 400 <= r.status < 500, (data.hex(), body)
                assert body["error"]["message"]
    assert _snapshot(node) == before


async def test_unknown_routes_and_methods_answer_json(node: RunningNode) -> None:
    status, err = await _get(node.url + "/nope")
    assert status == 404 and err["error"]["code"] == "not_found"
    async with aiohttp.ClientSession() as s, s.delete(node.url + "/status") as r:
        assert r.status == 405
        assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_metrics_text_parses(node: RunningNode) -> None:
    a, b, _ = node.keys
    g = node.genesis
    node.view.fl.test_accuracy = 0.5
    node.view.metrics.block_seconds.observe(0.8)
    node.view.metrics.gossip_messages.labels(topic="txs", direction="in").inc(3)
    drops = {"reject_signature": 2, "duplicate": 7}
    node.view.metrics.add_event_source("gossipsub", lambda: drops)
    await _post(
        node.url,
        sign_tx(a, g.chain_id, 2, g.fees, Transfer(b.address, 5)).encode(),
        "application/octet-stream",
    )
    async with aiohttp.ClientSession() as s, s.get(node.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples = {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
    }
    assert samples[("fedchain_height", ())] == 3
    assert samples[("fedchain_test_accuracy", ())] == 0.5
    assert samples[("fedchain_mempool_txs", ())] == 1
    assert samples[("fedchain_mempool_added_total", ())] == 1
    assert samples[("fedchain_block_seconds_count", ())] == 1
    key = ("fedchain_gossip_messages_total", (("direction", "in"), ("topic", "txs")))
    assert samples[key] == 3
    assert ("fedchain_round_seconds_count", ()) in samples
    # A layer's own counters, read at scrape time.
    ev = "fedchain_events_total"
    assert samples[(ev, (("layer", "gossipsub"), ("reason", "reject_signature")))] == 2
    assert samples[(ev, (("layer", "gossipsub"), ("reason", "duplicate")))] == 7


def test_nodes_in_one_process_have_separate_registries() -> None:
    regs = [NodeMetrics(), NodeMetrics()]
    regs[0].height.set(5)
    assert b"fedchain_height 5.0" in regs[0].render()
    assert b"fedchain_height 0.0" in regs[1].render()


async def test_server_from_config_binds_the_configured_address(node: RunningNode) -> None:
    from node.config import RPCConfig
    from node.rpc.server import RPCServer

    server = RPCServer.from_config(node.view, RPCConfig(listen="127.0.0.1:0", max_body_bytes=2048))
    await server.start()
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        status, st = await _get(server.url + "/status")
        assert status == 200 and st["latest_height"] == 3
        got, err = await _post(server.url, b"x" * 2049, "application/octet-stream")
        assert got == 413 and "2048" in err["error"]["message"]
    finally:
        await server.close()
    # A port in use is a clear OSError naming the address, not a traceback from deep inside.
    taken = RPCServer(node.view, "127.0.0.1", node.server.port)
    with pytest.raises(OSError, match=f"cannot serve RPC on 127.0.0.1:{node.server.port}"):
        await taken.start()


async def test_unusable_model_updates_get_422_and_change_nothing(node: RunningNode) -> None:
    """Issue 15 item 1: ``POST /txs`` never decoded an update's payload, so an update with
    no payload, NaN values or another base model was admitted and froze the node."""
    g = node.genesis
    trainer = node.keys[2]  # nonce 1: it staked at nonce 0
    base = payload_base(g.fl, node.ledger.state.meta.global_model)

    def sparse(**kw: Any) -> FLUpdate:
        args: dict[str, Any] = {"arch": "cnn", "base_hash": base, "round_": 0}
        args.update(kw)
        # Top-k float16 keeps the hex body under the test server's small body limit.
        return encode_update(
            random_delta(3), num_samples=40, encoding="float16", topk=0.005, **args
        )

    def body(payload: bytes | None, signed_over: bytes | None = None) -> bytes:
        over = signed_over or payload
        assert over is not None
        tx = signed_update(
            trainer, g, over, round=0, base_ledger_hash=ZERO_HASH, samples=40, nonce=1
        )
        doc = {"tx": tx.encode().hex()}
        if payload is not None:
            doc["payload"] = payload.hex()
        return json.dumps(doc).encode()

    good = sparse().encode()
    cases = [
        (body(None, good), "missing_payload"),
        (body(nan_update(sparse())), "non_finite_payload"),
        (body(sparse(base_hash=b"\x42" * 32).encode()), "wrong_base"),
        (body(b"\x01junk"), "bad_payload"),
    ]
    before = _snapshot(node)
    for data, code in cases:
        status, err = await _post(node.url, data, "application/json")
        assert (status, err.get("error", {}).get("code")) == (422, code), err
        assert _snapshot(node) == before and node.mempool.payload_bytes == 0
    status, out = await _post(node.url, body(good), "application/json")
    assert status == 202, out
    assert node.mempool.payload(bytes.fromhex(out["tx_hash"])) == good
