"""scripts/compose_check.py against fake node RPCs: it must pass only on real agreement,
fail fast on a fork, and time out with a reason rather than hang."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compose_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


cc = _load()


class FakeNode:
    """A node RPC serving /status and /blocks/{h} from a dict of block hashes."""

    def __init__(self, height: int, fl_round: int, hashes: dict[int, str]) -> None:
        self.height = height
        self.fl_round = fl_round
        self.hashes = hashes
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc: Any
                if self.path == "/status":
                    doc = {cc.STATUS_HEIGHT: node.height, cc.STATUS_ROUND: node.fl_round}
                elif self.path.startswith("/blocks/"):
                    h = int(self.path.rsplit("/", 1)[1])
                    if h not in node.hashes or h > node.height:
                        self.send_error(404)
                        return
                    doc = {"height": h, cc.BLOCK_HASH: node.hashes[h]}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


CHAIN = {h: f"{h:064x}" for h in range(1, 20)}


@pytest.fixture
def make_nodes() -> Iterator[Any]:
    made: list[FakeNode] = []

    def make(specs: list[tuple[int, int, dict[int, str]]]) -> list[str]:
        for height, fl_round, hashes in specs:
            made.append(FakeNode(height, fl_round, hashes))
        return [n.url for n in made[-len(specs) :]]

    yield make
    for n in made:
        n.close()


def test_agree_at_the_common_height_even_when_heights_differ(make_nodes: Any) -> None:
    urls = make_nodes([(5, 2, CHAIN), (7, 3, CHAIN), (6, 2, CHAIN), (5, 2, CHAIN)])
    done, line = cc.poll_agreement(urls, min_round=2, min_height=1)
    assert done
    assert f"block 5 hash {CHAIN[5]}" in line
    assert cc.main(["agree", "--min-round", "2", "--timeout", "5", *urls]) == 0


def test_a_fork_at_the_common_height_fails_immediately(make_nodes: Any) -> None:
    forked = {**CHAIN, 5: "f" * 64}
    urls = make_nodes([(5, 2, CHAIN), (6, 2, forked)])
    with pytest.raises(SystemExit, match="disagree on block 5"):
        cc.main(["agree", "--timeout", "30", *urls])


def test_low_round_or_height_times_out_with_the_reason(
    make_nodes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = make_nodes([(5, 1, CHAIN), (5, 2, CHAIN)])
    assert cc.main(["agree", "--min-round", "2", "--timeout", "0", *urls]) == 1
    assert "FL round below 2" in capsys.readouterr().err
    assert cc.main(["agree", "--min-height", "9", "--timeout", "0", *urls]) == 1
    assert "common height 5 < 9" in capsys.readouterr().err


def test_unreachable_node_reports_not_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cc.main(["healthy", "--timeout", "0", "http://127.0.0.1:1"]) == 1
    assert "node did not become healthy" in capsys.readouterr().err


def test_http_errors_are_check_errors(make_nodes: Any) -> None:
    (url,) = make_nodes([(5, 2, CHAIN)])
    with pytest.raises(cc.CheckError, match="HTTP 404"):
        cc.block_hash(url, 99)
    with pytest.raises(cc.CheckError, match="HTTP 404"):
        cc.node_status(url + "/nothing")
    assert cc.main(["height", url]) == 0
