"""``fedchain tx``, ``status`` and ``model`` against a running RPC server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from node.cli.main import main
from node.ledger.tx import Stake, Transfer, Unstake
from node.services.status import ModelSnapshot
from tests.node.nodekit import RunningNode


def _home(node: RunningNode, tmp_path: Path, key_index: int = 0) -> Path:
    home = tmp_path / "cli-home"
    home.mkdir(exist_ok=True)
    node.keys[key_index].save(home / "validator_key.json", overwrite=True)
    node.genesis.save(home / "genesis.json")
    return home


async def _run(argv: list[str]) -> int:
    # The CLI blocks on urllib; run it off the loop that serves the RPC.
    return await asyncio.to_thread(main, argv)


async def test_tx_commands_sign_and_submit(
    node: RunningNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _home(node, tmp_path)
    a, b, _ = node.keys
    common = ["--home", str(home), "--node", node.url]
    to = b.address.hex()
    assert await _run(["tx", "transfer", "--to", to, "--amount", "25", *common]) == 0
    assert "submitted transfer" in capsys.readouterr().out
    assert await _run(["tx", "stake", "--amount", "2000", *common, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nonce"] == 3  # two committed txs, then the pending transfer
    pending = node.mempool.pending(a.address)
    assert [type(t.body) for t in pending] == [Transfer, Stake]
    assert pending[0].body == Transfer(b.address, 25)
    assert [t.nonce for t in pending] == [2, 3]
    for t in pending:  # the minimum fee, exactly
        assert t.fee == node.genesis.fees.base + node.genesis.fees.per_byte * t.size
    assert out["tx_hash"] == pending[1].hash.hex()


async def test_tx_without_local_genesis_fetches_fee_params(
    node: RunningNode, tmp_path: Path
) -> None:
    home = _home(node, tmp_path, key_index=2)
    (home / "genesis.json").unlink()
    assert (
        await _run(["tx", "unstake", "--amount", "100", "--home", str(home), "--node", node.url])
        == 0
    )
    (tx,) = node.mempool.pending(node.keys[2].address)
    assert tx.body == Unstake(100)


async def test_tx_errors(
    node: RunningNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _home(node, tmp_path)
    common = ["--home", str(home), "--node", node.url]
    before = len(node.mempool)
    # The ledger refuses: unstaking more than is bonded.
    assert await _run(["tx", "unstake", "--amount", str(10**9), *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: transaction not accepted:") and "HTTP 422" in err
    # Bad recipient, missing key, unreachable node: one clear line, exit 1.
    assert await _run(["tx", "transfer", "--to", "abc", "--amount", "1", *common]) == 1
    assert "--to:" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["tx", "stake", "--amount", "1", "--home", str(empty), "--node", node.url]
    assert await _run(argv) == 1
    assert "no key file" in capsys.readouterr().err
    dead = ["--home", str(home), "--node", "http://127.0.0.1:9"]
    assert await _run(["tx", "stake", "--amount", "1", *dead, "--timeout", "2"]) == 1
    assert "cannot reach the node" in capsys.readouterr().err
    assert len(node.mempool) == before
    with pytest.raises(SystemExit) as e:
        main(["tx", "stake", "--amount", "0", *common])
    assert e.value.code == 2


async def test_status(
    node: RunningNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(["status", "--node", node.url, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["latest_height"] == 3 and st["chain_id"] == "rpc-test"
    assert await _run(["status", "--node", node.url]) == 0
    out = capsys.readouterr().out
    assert "rpc-test" in out and "latest_height" in out
    assert await _run(["status", "--node", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "cannot reach" in capsys.readouterr().err


async def test_status_uses_the_home_config(
    node: RunningNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "h"
    assert main(["init", "--home", str(home)]) == 0
    cfg = (home / "config.toml").read_text()
    (home / "config.toml").write_text(
        cfg.replace("127.0.0.1:26657", f"127.0.0.1:{node.server.port}")
    )
    capsys.readouterr()
    assert await _run(["status", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["moniker"] == "test-node"


@pytest.mark.slow  # loads MNIST and evaluates 10,000 images
async def test_model_download_and_eval(
    node: RunningNode,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mnist_dir: Path,
) -> None:
    from fl.models import init_params

    out = tmp_path / "m.safetensors"
    assert await _run(["model", "download", "--out", str(out), "--node", node.url]) == 1
    assert "holds no global model" in capsys.readouterr().err
    assert not out.exists()
    snap = ModelSnapshot.from_params(2, "cnn", init_params("cnn", 3))
    node.view.fl.snapshot = snap
    assert await _run(["model", "download", "--out", str(out), "--node", node.url]) == 0
    assert out.read_bytes() == snap.safetensors
    assert snap.model_hash.hex() in capsys.readouterr().out
    # A server that sends other bytes than it announced is caught before anything is written.
    out2 = tmp_path / "m2.safetensors"
    cases = [
        (snap.safetensors[:100], "invalid"),  # truncated: not a safetensors file
        (snap.safetensors[:-4] + b"\0" * 4, "differs from the announced"),  # one weight changed
    ]
    for data, words in cases:
        node.view.fl.snapshot = ModelSnapshot(2, "cnn", snap.model_hash, data)
        assert await _run(["model", "download", "--out", str(out2), "--node", node.url]) == 1
        assert words in capsys.readouterr().err
        assert not out2.exists()

    argv = ["model", "eval", str(out), "--data-dir", str(mnist_dir), "--json", "--threads", "1"]
    assert await _run(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_samples"] == 10_000 and 0.0 <= res["accuracy"] <= 1.0
    assert res["model_hash"] == snap.model_hash.hex()
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a model")
    assert await _run(["model", "eval", str(garbage), "--data-dir", str(mnist_dir)]) == 1
    assert "not a valid safetensors" in capsys.readouterr().err
    assert await _run(["model", "eval", str(out), "--data-dir", str(tmp_path)]) == 1
    assert "lacks" in capsys.readouterr().err
