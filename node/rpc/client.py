"""A small blocking RPC client for the CLI (stdlib urllib: one request per command).

Errors come back as ``RPCClientError`` carrying the server's error code and message, or a
sentence saying the node could not be reached, so the CLI can print one clear line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["RPCClient", "RPCClientError"]

MAX_RESPONSE_BYTES = 64 << 20


class RPCClientError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RPCClient:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, path: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raw = e.read(64 << 10)
            try:
                err = json.loads(raw)["error"]
                code, msg = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, msg = "http_error", raw.decode(errors="replace").strip() or str(e.reason)
            raise RPCClientError(f"{msg} ({code}, HTTP {e.code})", status=e.code, code=code) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RPCClientError(f"cannot reach the node at {self.url}: {reason}") from e
        if len(body) > MAX_RESPONSE_BYTES:
            raise RPCClientError(f"response from {self.url}{path} is larger than 64 MiB")
        return body

    def get_json(self, path: str) -> Any:
        body = self._request(path)
        try:
            return json.loads(body)
        except ValueError as e:
            raise RPCClientError(f"{self.url}{path} did not return JSON") from e

    def get_bytes(self, path: str) -> bytes:
        return self._request(path)

    def post_tx(self, tx_bytes: bytes) -> dict[str, Any]:
        body = self._request("/txs", tx_bytes, "application/octet-stream")
        try:
            out = json.loads(body)
        except ValueError as e:
            raise RPCClientError(f"{self.url}/txs did not return JSON") from e
        if not isinstance(out, dict):
            raise RPCClientError(f"{self.url}/txs returned an unexpected answer")
        return out
