"""The HTTP RPC server (aiohttp): JSON endpoints over a ``NodeView``.

Every error, including aiohttp's own (unknown route, wrong method, body over
``client_max_size``), is answered as ``{"error": {"code": ..., "message": ...}}`` with a
meaningful status, so scripts can branch on ``code`` and people can read ``message``.
Bad input never reaches the ledger: ``POST /txs`` decodes with the strict codec, then
hands the tx to ``NodeView.submit_tx``, which admits it only if the ledger's own
transition accepts it after the sender's pending txs; a refused tx changes nothing.

Status codes for a refused tx: 400 undecodable input, 408 body not received within
``body_timeout``, 409 already known, 413 too large, 415 unsupported content type, 422 a
well-formed tx the ledger rejects (bad signature, wrong chain, bad nonce, fee too low,
...) or a model update whose payload is missing or unusable (undecodable, not finite, not
the signed one, trained from another model: the mempool's admission check,
``node.app.updates``, the same one gossip applies), 429 sender limit, 503 mempool full.

Every client may be hostile, so before any handler runs: connections are admitted and
timed by ``node.rpc.connections`` (caps per client IP and in all, deadlines for request
heads and idle keep-alives), and a request whose Host header names a host this node does
not answer for gets 403 (``node.rpc.hosts``: DNS rebinding). A client that goes away in
the middle of a request, or sends one aiohttp cannot parse, is logged as one line, not as a
failure of the node.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node import __version__
from node.app.mempool import AlreadyKnown, MempoolFull, SenderLimit
from node.config import RPCConfig, parse_host_port
from node.core.codec import CodecError
from node.core.crypto import parse_address
from node.ledger.tx import MAX_TX_BYTES, Tx, TxError
from node.rpc.connections import ConnectionGuard, ConnectionLimits
from node.rpc.hosts import HostPolicy
from node.rpc.metrics import CONTENT_TYPE
from node.rpc.render import render_block, render_validators
from node.rpc.view import NodeView

__all__ = ["RPCServer", "make_app"]

log = logging.getLogger(__name__)

VIEW: web.AppKey[NodeView] = web.AppKey("view")
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)
HOSTS: web.AppKey[HostPolicy] = web.AppKey("hosts", HostPolicy)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class _Fail(Exception):
    """Raised inside a handler to answer with an error response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Fail as e:
        return error(e.status, e.code, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        msg = e.reason
        if e.status == 413:
            msg = f"request body exceeds {request.app[MAX_BODY]} bytes"
        elif e.status == 404:
            msg = f"no such endpoint {request.path}"
        elif e.status == 405:
            msg = f"{request.method} is not allowed on {request.path}"
        return error(e.status, code, msg)
    except ConnectionError as e:
        # The client went away mid-request (its body never came): its doing, not ours.
        log.info("RPC %s %s from %s aborted: %s", request.method, request.path, request.remote, e)
        return error(400, "aborted", "the request was aborted by the client")
    except Exception:
        log.exception("RPC handler for %s failed", request.path)
        return error(500, "internal", "internal error (see the node's log)")


@web.middleware
async def _admission(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Host headers; tell the connection guard a request is being served."""
    if not request.app[HOSTS].allows(request.headers.get("Host")):
        raise _Fail(
            403,
            "host_not_allowed",
            f"this node does not answer for host {request.headers['Host']!r} "
            "(add it to rpc.allowed_hosts)",
        )
    guard = request.app[GUARD]
    guard.request_started(request.transport)
    try:
        return await handler(request)
    finally:
        guard.request_finished(request.transport)


class _ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log. aiohttp logs every malformed request (a bad request line,
    oversized headers) with a traceback; any client can send those, so each is one line
    at info, like an aborted request. Other failures keep their traceback."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            text = " ".join(str(exc_info).split())
            self.info("%s: %s", str(msg) % args, text)
        else:
            self.logger.exception(msg, *args, exc_info=exc_info, **kw)


def _view(request: web.Request) -> NodeView:
    return request.app[VIEW]


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


# --------------------------------------------------------------------------- handlers


async def status(request: web.Request) -> web.Response:
    v = _view(request)
    state = v.ledger.state
    meta = state.meta
    model = v.model()
    return web.json_response(
        {
            "node_id": v.node_id,
            "moniker": v.moniker,
            "version": __version__,
            "chain_id": state.chain_id,
            "genesis_hash": state.genesis.hash.hex(),
            "consensus_engine": state.genesis.consensus_engine,
            "latest_height": meta.height,
            "latest_block_hash": meta.last_block_hash.hex() if meta.height else None,
            "latest_block_time_ms": meta.time_ms,
            "app_hash": v.ledger.app_hash().hex(),
            "peers": len(v.peers()),
            "mempool_txs": len(v.mempool),
            "fl_round": meta.fl_round,
            "global_model_hash": meta.global_model.hex(),
            "model_round": model.round if model else None,
            "test_accuracy": v.latest_accuracy(),
            "test_accuracy_round": v.accuracy_round(),
            "catching_up": v.catching_up(),
        }
    )


async def genesis(request: web.Request) -> web.Response:
    return web.json_response(_view(request).ledger.state.genesis.to_json())


def _block_response(v: NodeView, height: int) -> web.Response:
    latest = v.ledger.height
    if height < 1 or height > latest:
        raise _Fail(404, "no_block", f"no block at height {height} (latest is {latest})")
    block = v.ledger.store.block(height)
    if block is None:
        raise _Fail(404, "no_block", f"block {height} is not in this node's store")
    return web.json_response(render_block(block))


async def block_latest(request: web.Request) -> web.Response:
    v = _view(request)
    if v.ledger.height == 0:
        raise _Fail(404, "no_block", "no block committed yet")
    return _block_response(v, v.ledger.height)


async def block_at(request: web.Request) -> web.Response:
    text = request.match_info["height"]
    if not text.isdigit() or len(text) > 20:
        raise _Fail(400, "bad_height", f"height {text!r} is not a non-negative integer")
    return _block_response(_view(request), int(text))


async def validators(request: web.Request) -> web.Response:
    v = _view(request)
    q = request.query.get("height")
    if q is None:
        height = v.ledger.height + 1
    elif q.isdigit() and len(q) <= 20 and int(q) >= 1:
        height = int(q)
    else:
        raise _Fail(400, "bad_height", f"height {q!r} is not a positive integer")
    if height > v.ledger.height + v.ledger.state.genesis.staking.valset_delay:
        raise _Fail(404, "unknown_height", f"the validator set of height {height} is not known")
    try:
        vs = v.ledger.validator_set(height)
    except KeyError as e:
        raise _Fail(404, "unknown_height", str(e.args[0])) from e
    return web.json_response(
        {
            "height": height,
            "hash": vs.hash.hex(),
            "total_power": sum(x.power for x in vs.validators),
            "validators": render_validators(vs),
        }
    )


async def peers(request: web.Request) -> web.Response:
    return web.json_response({"peers": [asdict(p) for p in _view(request).peers()]})


async def peer(request: web.Request) -> web.Response:
    text = request.match_info["peer_id"]
    standing = _view(request).peer_standing(text) if len(text) <= 128 else None
    if standing is None:
        raise _Fail(400, "bad_peer_id", f"{text[:128]!r} is not a peer ID")
    return web.json_response(asdict(standing))


async def account(request: web.Request) -> web.Response:
    v = _view(request)
    text = request.match_info["address"]
    try:
        addr = parse_address(text)
    except ValueError as e:
        raise _Fail(400, "bad_address", str(e)) from e
    state = v.ledger.state
    acct = state.account(addr)
    bond = state.bond(addr)
    pending = v.mempool.pending(addr)
    return web.json_response(
        {
            "address": addr.hex(),
            "balance": acct.balance,
            "nonce": acct.nonce,
            # The nonce a new tx must carry, counting this sender's txs in the mempool.
            "next_nonce": acct.nonce + len(pending),
            "pending_txs": len(pending),
            "stake": bond.stake if bond else 0,
            "jailed": bond.jailed if bond else False,
            "trainer": state.is_trainer(addr),
        }
    )


async def model_info(request: web.Request) -> web.Response:
    v = _view(request)
    meta = v.ledger.state.meta
    m = v.model()
    return web.json_response(
        {
            "fl_round": meta.fl_round,
            "chain_model_hash": meta.global_model.hex(),
            "architecture": m.architecture if m else v.ledger.state.genesis.fl.model,
            "available": m is not None,
            "round": m.round if m else None,
            "model_hash": m.model_hash.hex() if m else None,
            "safetensors_sha256": m.safetensors_sha256.hex() if m else None,
            "size_bytes": len(m.safetensors) if m else None,
        }
    )


async def model(request: web.Request) -> web.Response:
    m = _view(request).model()
    if m is None:
        raise _Fail(404, "no_model", "this node holds no global model yet")
    return web.Response(
        body=m.safetensors,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="model-round{m.round}.safetensors"',
            "X-Model-Hash": m.model_hash.hex(),
        },
    )


async def fl_history(request: web.Request) -> web.Response:
    return web.json_response({"rounds": [asdict(r) for r in _view(request).fl_history()]})


def _unhex(doc: dict[str, Any], key: str) -> bytes | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Fail(400, "bad_request", f"{key!r} must be a hex string")
    try:
        return binascii.unhexlify(value.removeprefix("0x"))
    except (binascii.Error, ValueError) as e:
        raise _Fail(400, "bad_request", f"{key!r} is not valid hex: {e}") from e


async def submit_tx(request: web.Request) -> web.Response:
    v = _view(request)
    ctype = request.content_type
    timeout = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout):
            body = await request.read()  # raises 413 past client_max_size
    except TimeoutError:
        raise _Fail(408, "body_timeout", f"the body did not arrive within {timeout:g} s") from None
    payload: bytes | None = None
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:  # RecursionError: absurd nesting
            raise _Fail(400, "bad_json", f"malformed JSON: {e}") from e
        if not isinstance(doc, dict) or set(doc) - {"tx", "payload"}:
            raise _Fail(400, "bad_request", 'expected {"tx": "<hex>", "payload": "<hex>"?}')
        raw = _unhex(doc, "tx")
        if raw is None:
            raise _Fail(400, "bad_request", 'missing "tx"')
        payload = _unhex(doc, "payload")
    elif ctype == "application/octet-stream":
        raw = body
    else:
        raise _Fail(
            415,
            "unsupported_media_type",
            "send the tx as application/octet-stream or application/json",
        )
    if not raw:
        raise _Fail(400, "bad_tx", "empty transaction")
    if len(raw) > MAX_TX_BYTES:
        raise _Fail(413, "too_large", f"tx of {len(raw)} bytes exceeds {MAX_TX_BYTES}")
    try:
        tx = Tx.from_bytes(raw)
    except CodecError as e:
        raise _Fail(400, "bad_tx", f"undecodable transaction: {e}") from e
    try:
        await v.submit_tx(tx, payload)
    except TxError as e:
        code = 409 if isinstance(e, AlreadyKnown) else 422
        if isinstance(e, MempoolFull):
            code = 503
        elif isinstance(e, SenderLimit):
            code = 429
        return error(code, e.code, str(e) or e.code)
    return web.json_response({"tx_hash": tx.hash.hex(), "accepted": True}, status=202)


async def metrics(request: web.Request) -> web.Response:
    v = _view(request)
    m = v.metrics
    # Values the server can read itself are refreshed per scrape, so they are never stale.
    m.height.set(v.ledger.height)
    m.fl_round.set(v.ledger.state.meta.fl_round)
    m.peers.set(len(v.peers()))
    m.mempool_txs.set(len(v.mempool))
    m.mempool_bytes.set(v.mempool.size_bytes)
    m.catching_up.set(1 if v.catching_up() else 0)
    acc = v.latest_accuracy()
    if acc is not None:
        m.test_accuracy.set(acc)
    resp = web.Response(body=m.render())
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


def make_app(
    view: NodeView,
    *,
    max_body_bytes: int = 1 << 20,
    body_timeout: float = 30.0,
    guard: ConnectionGuard | None = None,
    hosts: HostPolicy | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_errors, _admission])
    app[VIEW] = view
    app[MAX_BODY] = max_body_bytes
    app[BODY_TIMEOUT] = body_timeout
    app[GUARD] = guard if guard is not None else ConnectionGuard()
    app[HOSTS] = hosts if hosts is not None else HostPolicy()
    app.router.add_get("/status", status)
    app.router.add_get("/genesis", genesis)
    app.router.add_get("/blocks/latest", block_latest)
    app.router.add_get("/blocks/{height}", block_at)
    app.router.add_get("/validators", validators)
    app.router.add_get("/peers", peers)
    app.router.add_get("/peers/{peer_id}", peer)
    app.router.add_get("/accounts/{address}", account)
    app.router.add_get("/model/info", model_info)
    app.router.add_get("/model", model)
    app.router.add_get("/fl/history", fl_history)
    app.router.add_post("/txs", submit_tx)
    app.router.add_get("/metrics", metrics)
    return app


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections pass the server's ``ConnectionGuard`` first."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server), self._host, self._port
        )


class RPCServer:
    """The RPC app bound to ``host:port`` (port 0 picks a free port; see ``port``).

    ``allowed_hosts`` adds names to the Host header check (``node.rpc.hosts``); the name
    it listens on is always allowed."""

    def __init__(
        self,
        view: NodeView,
        host: str = "127.0.0.1",
        port: int = 26657,
        *,
        max_body_bytes: int = 1 << 20,
        body_timeout: float = 30.0,
        limits: ConnectionLimits | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.guard = ConnectionGuard(limits)
        self.app = make_app(
            view,
            max_body_bytes=max_body_bytes,
            body_timeout=body_timeout,
            guard=self.guard,
            hosts=HostPolicy((host, *allowed_hosts)),
        )
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_config(cls, view: NodeView, cfg: RPCConfig) -> RPCServer:
        """The server a node's ``[rpc]`` config section describes."""
        host, port = parse_host_port(cfg.listen, key="rpc.listen")
        limits = ConnectionLimits(
            max_connections=cfg.max_connections,
            max_per_ip=cfg.max_connections_per_ip,
            header_timeout=cfg.header_timeout,
            idle_timeout=cfg.idle_timeout,
        )
        return cls(
            view,
            host,
            port,
            max_body_bytes=cfg.max_body_bytes,
            body_timeout=cfg.body_timeout,
            limits=limits,
            allowed_hosts=cfg.allowed_hosts,
        )

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, logger=_ClientErrorLog(logging.getLogger("aiohttp.server"))
        )
        await runner.setup()
        site = _GuardedSite(runner, self.host, self._port, self.guard)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"cannot serve RPC on {self.host}:{self._port}: {e}") from e
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
