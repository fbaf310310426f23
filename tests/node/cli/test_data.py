"""``fedchain data split``: shard directories from a full MNIST copy, or a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli.main import main


def test_split_writes_one_directory_per_participant(
    tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shards"
    argv = ["data", "split", "--nodes", "2", "--partition", "shards:2", "--seed", "5"]
    assert main([*argv, "--out", str(out), "--data-dir", str(mnist_dir)]) == 0
    docs = [json.loads((out / f"node{i}" / "manifest.json").read_text()) for i in range(2)]
    assert [d["index"] for d in docs] == [0, 1]
    assert {(d["partition"], d["seed"], d["nodes"]) for d in docs} == {("shards:2", 5, 2)}
    assert sum(d["samples"] for d in docs) == 60_000
    assert f"{out / 'node1'}: {docs[1]['samples']} examples" in capsys.readouterr().out
    # Again into the same place: refused, the shards are kept.
    assert main([*argv, "--out", str(out), "--data-dir", str(mnist_dir)]) == 1
    assert "already holds training data" in capsys.readouterr().err
    assert main(["data", "split", "--nodes", "2", "--out", str(tmp_path / "x"),
                 "--data-dir", str(tmp_path)]) == 1  # fmt: skip
    assert "lacks train-images-idx3-ubyte" in capsys.readouterr().err
