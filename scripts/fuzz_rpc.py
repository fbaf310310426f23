"""Throw malformed HTTP at a live node's RPC and check every answer is a typed refusal.

The RPC surface's sibling of ``fuzz_p2p.py``: each case is one connection carrying raw
bytes (so request lines, headers and bodies can be broken in ways no HTTP client would
send): unknown methods and paths, absurd heights and addresses, bodies that are not a tx
(random bytes, truncated or padded txs, JSON of every wrong shape and type), wrong or
missing content types, oversized and lying Content-Lengths, broken chunked encoding,
oversized and junk headers, foreign Host headers, and raw garbage. A finding is:

- a 500 (a handler failed), or any 5xx other than 503 (a typed "busy" answer);
- an error the server's own handlers wrote without ``{"error": {"code", "message"}}``;
- no answer within the timeout (aiohttp's parser may answer garbage with a plain-text
  400, or close the connection, which is fine);
- the node no longer answering ``GET /status`` after the run.

    python scripts/fuzz_rpc.py --url http://127.0.0.1:26657 --cases 5000
    python scripts/fuzz_rpc.py --url http://127.0.0.1:26657 --seconds 60 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Finding", "FuzzReport", "fuzz", "make_case"]

# Statuses a handler of the node answers with (node.rpc.server), and those aiohttp's own
# parser may answer malformed requests with before any handler runs.
APP_STATUSES = {200, 202, 400, 403, 404, 405, 408, 409, 413, 415, 422, 429, 503}
PARSER_STATUSES = {400, 413, 414, 417, 431}

PATHS = [
    "/status",
    "/genesis",
    "/blocks/latest",
    "/blocks/1",
    "/validators",
    "/peers",
    "/model/info",
    "/model",
    "/fl/history",
    "/metrics",
    "/txs",
    "/accounts/00",
]


@dataclass(frozen=True)
class Finding:
    case: str
    request: bytes
    problem: str


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    closed_without_answer: int = 0
    findings: list[Finding] = field(default_factory=list)


# --------------------------------------------------------------------------- cases


def _junk(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def _text(rng: random.Random, n: int, alphabet: str = "abcdefxyz0123456789-_.%/") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _path(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(PATHS)
    if roll < 0.55:
        return "/blocks/" + rng.choice(
            ["0", "-1", "x", "9" * rng.randrange(1, 40), "1e9", "%00", "1/2", ""]
        )
    if roll < 0.7:
        return "/accounts/" + rng.choice(
            ["", "zz", "0x" + "ab" * rng.randrange(0, 40), _text(rng, rng.randrange(0, 60))]
        )
    if roll < 0.8:
        return "/validators?height=" + rng.choice(["", "0", "-5", "abc", "9" * 30, "1&height=2"])
    if roll < 0.9:
        return "/" + _text(rng, rng.randrange(0, 300))
    return "/" + "a/" * rng.randrange(1, 3000)


def _json_body(rng: random.Random) -> bytes:
    hexes = ["", "0", "zz", "0x", "ab" * rng.randrange(0, 200), _junk(rng, 8).hex()]
    values: list[object] = [None, 1, -1, 2**70, 1.5, True, [], {}, "x", rng.choice(hexes)]
    doc: object = rng.choice(
        [
            {"tx": rng.choice(hexes)},
            {"tx": rng.choice(hexes), "payload": rng.choice(hexes)},
            {"tx": rng.choice(values)},
            {"tx": rng.choice(hexes), "extra": 1},
            {"payload": rng.choice(hexes)},
            rng.choice(values),
            [[[[[]]]]],
        ]
    )
    raw = json.dumps(doc).encode()
    if rng.random() < 0.2:
        raw = raw[: rng.randrange(len(raw) + 1)]  # truncated JSON
    if rng.random() < 0.05:
        raw = b"[" * 100_000  # absurd nesting
    return raw


def _body(rng: random.Random, max_body: int) -> tuple[str | None, bytes]:
    ctype = rng.choice(
        [
            "application/json",
            "application/octet-stream",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/json; charset=utf-16",
            None,
        ]
    )
    roll = rng.random()
    if ctype and ctype.startswith("application/json") and roll < 0.8:
        return ctype, _json_body(rng)
    if roll < 0.5:
        return ctype, _junk(rng, rng.randrange(0, 600))
    if roll < 0.6:
        return ctype, b""
    return ctype, _junk(rng, max_body + rng.randrange(1, 4096))  # over the body limit


def make_case(rng: random.Random, host: str, max_body: int) -> tuple[str, bytes]:
    """One malformed (or merely odd) request: a name for its kind and its raw bytes."""
    kind = rng.choice(
        ["method", "path", "body", "length", "chunked", "headers", "host", "garbage", "version"]
    )
    method = "GET"
    path = _path(rng)
    headers: list[tuple[str, str]] = [("Host", host), ("Connection", "close")]
    body = b""
    if kind == "method":
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "X" * 40])
    elif kind in ("body", "length", "chunked"):
        method, path = "POST", rng.choice(["/txs", "/txs", "/status", "/nope"])
        ctype, body = _body(rng, max_body)
        if ctype is not None:
            headers.append(("Content-Type", ctype))
    if kind == "length":
        # A Content-Length that lies (shorter than the body, not a number, negative,
        # or two that disagree); longer-than-sent bodies would only wait for the
        # server's body_timeout, which the hostile RPC tests cover.
        headers.append(
            ("Content-Length", rng.choice(["-1", "abc", "1e3", "0x10", str(max(0, len(body) - 1))]))
        )
        if rng.random() < 0.3:
            headers.append(("Content-Length", str(len(body) + 5)))
    elif kind == "chunked":
        headers.append(("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked", "bogus"])))
        body = rng.choice(
            [b"zz\r\n" + body + b"\r\n0\r\n\r\n", b"5\r\nab\r\n0\r\n\r\n", body + b"\r\n"]
        )
    elif body:
        headers.append(("Content-Length", str(len(body))))
    if kind == "headers":
        roll = rng.random()
        if roll < 0.3:
            headers.append(("X-Long", "a" * rng.randrange(8000, 20000)))
        elif roll < 0.6:
            headers += [(f"X-{i}", "v") for i in range(rng.randrange(100, 300))]
        else:
            headers.append((_text(rng, 10, "abc :\t()<>@"), _junk(rng, 20).decode("latin-1")))
    if kind == "host":
        headers[0] = ("Host", rng.choice(["evil.example", "", "a" * 300, "[::1", "x:y:z", "é"]))
        if rng.random() < 0.5:
            headers.append(("Host", host))  # and a second, honest one
    version = "HTTP/1.1"
    if kind == "version":
        version = rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/9", "HTTPS/1.1", ""])
    if kind == "garbage":
        return kind, _junk(rng, rng.randrange(1, 2000))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return kind, head.encode("latin-1", "replace") + b"\r\n" + body


# --------------------------------------------------------------------------- running


async def _exchange(host: str, port: int, data: bytes, timeout: float) -> bytes | None:
    """Send ``data`` on a new connection; the answer's bytes (b"" if closed unanswered),
    None when there was no answer in time."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:
                    pass  # refused mid-send: the answer (if any) is still there to read
                return await reader.read(1 << 20)
            except ConnectionError:
                return b""
            finally:
                writer.close()
    except TimeoutError:
        return None


def _judge(answer: bytes, *, head_request: bool = False) -> tuple[int | None, str | None]:
    """The status of an HTTP answer and the problem with it (None: fine); the answer to a
    HEAD request has no body to check."""
    head, _, body = answer.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].split(b" ")
    # aiohttp answers in the version the request named (HTTP/2.0 included).
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        return None, f"not an HTTP answer: {answer[:80]!r}"
    status = int(line[1])
    is_json = b"application/json" in head.lower()
    if status == 500 or (status >= 500 and status != 503):
        return status, f"server error {status}: {body[:200]!r}"
    if is_json:
        if status not in APP_STATUSES:
            return status, f"unexpected status {status}"
        if status >= 400 and not head_request:
            try:
                err = json.loads(body)["error"]
                if not isinstance(err["code"], str) or not isinstance(err["message"], str):
                    raise TypeError("code and message must be strings")
            except (ValueError, KeyError, TypeError) as e:
                return status, f"untyped error body ({e}): {body[:200]!r}"
    elif status >= 400 and status not in PARSER_STATUSES:
        return status, f"unexpected plain-text status {status}"
    return status, None


async def fuzz(
    url: str,
    *,
    cases: int = 1000,
    seconds: float | None = None,
    seed: int = 0,
    max_body: int = 1 << 20,
    timeout: float = 10.0,
    on_case: Callable[[int], None] | None = None,
) -> FuzzReport:
    """Run up to ``cases`` cases (or ``seconds``) against the RPC at ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    rng = random.Random(seed)
    report = FuzzReport()
    deadline = None if seconds is None else time.monotonic() + seconds
    for i in range(cases):
        if deadline is not None and time.monotonic() > deadline:
            break
        kind, data = make_case(rng, host_header, max_body)
        answer = await _exchange(host, port, data, timeout)
        report.cases += 1
        if answer is None:
            report.findings.append(Finding(kind, data[:400], f"no answer in {timeout} s"))
        elif not answer:
            report.closed_without_answer += 1
        else:
            status, problem = _judge(answer, head_request=data.startswith(b"HEAD "))
            if status is not None:
                report.statuses[status] = report.statuses.get(status, 0) + 1
            if problem is not None:
                report.findings.append(Finding(kind, data[:400], problem))
        if on_case is not None:
            on_case(i)
    alive = await _exchange(
        host,
        port,
        f"GET /status HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode(),
        timeout,
    )
    if not alive or not alive.startswith(b"HTTP/1.1 200"):
        report.findings.append(Finding("status", b"", "the node stopped answering GET /status"))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:26657", help="the node's RPC")
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-body", type=int, default=1 << 20, help="the node's rpc.max_body_bytes")
    args = ap.parse_args()
    start = time.perf_counter()
    report = asyncio.run(
        fuzz(
            args.url, cases=args.cases, seconds=args.seconds, seed=args.seed, max_body=args.max_body
        )
    )
    took = time.perf_counter() - start
    print(
        f"{report.cases} cases in {took:.1f} s; statuses {dict(sorted(report.statuses.items()))}; "
        f"closed without an answer {report.closed_without_answer}"
    )
    for f in report.findings[:20]:
        print(f"FINDING [{f.case}] {f.problem}\n  request: {f.request[:200]!r}")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
