"""The live `testnet up` table shows, for nodes that do not evaluate, the accuracy another
node measured on the same round's global model, and says so."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from node.cli.testnet import _table


def _status(i: int, fl_round: int, acc: float | None, acc_round: int | None) -> dict[str, Any]:
    return {
        "moniker": f"node{i}",
        "latest_height": 7,
        "fl_round": fl_round,
        "peers": 2,
        "mempool_txs": 1,
        "test_accuracy": acc,
        "test_accuracy_round": acc_round,
        "catching_up": False,
    }


def _render(sts: list[dict[str, Any] | None]) -> str:
    console = Console(record=True, width=120)
    console.print(_table(sts, 12.0, 3))
    return console.export_text()


def test_non_evaluating_nodes_show_the_evaluators_accuracy_for_their_round() -> None:
    text = _render(
        [
            _status(0, 3, 0.9812, 3),
            _status(1, 3, None, None),  # same round: node0's number, marked
            _status(2, 2, None, None),  # behind: nobody measured round 2 here
            None,
        ]
    )
    lines = {line.split()[1]: line for line in text.splitlines() if "node" in line[:8]}
    assert "0.9812" in lines["node0"] and "0.9812*" not in lines["node0"]
    assert "0.9812*" in lines["node1"]
    assert "0.98" not in lines["node2"]
    assert "starting" in lines["node3"]
    assert "* same global model, evaluated by node0" in text


def test_no_caption_when_every_node_evaluates() -> None:
    text = _render([_status(0, 1, 0.9, 1), _status(1, 1, 0.9, 1)])
    assert "evaluated by" not in text and "0.9000*" not in text
