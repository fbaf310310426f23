"""Spawn and drive the py-libp2p reference peer (pylibp2p_peer.py) from asyncio tests.

The venv is created on demand with scripts/interop_venv.sh; tests are skipped, loudly,
only when that script cannot create it (for example without network access to PyPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[4]
VENV_PYTHON = ROOT / ".interop-venv" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("pylibp2p_peer.py")
_venv_checked: bool | None = None


def ensure_interop_venv() -> Path:
    """Create the interop venv if needed; pytest.skip with the reason if impossible."""
    global _venv_checked
    if _venv_checked is None:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "interop_venv.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        _venv_checked = proc.returncode == 0 and VENV_PYTHON.exists()
        if not _venv_checked:
            sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
            ensure_interop_venv.reason = (  # type: ignore[attr-defined]
                f"INTEROP VENV COULD NOT BE CREATED (rc={proc.returncode}): "
                + (proc.stderr.strip().splitlines() or ["no output"])[-1]
            )
    if not _venv_checked:
        pytest.skip(ensure_interop_venv.reason)  # type: ignore[attr-defined]
    return VENV_PYTHON


class PyLibp2pPeer:
    """A running py-libp2p peer; ``await peer.command("ping <id>")`` returns its reply."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.peer_id = ""
        self.addr = ""
        self.received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.lines: list[str] = []

    async def __aenter__(self) -> PyLibp2pPeer:
        python = ensure_interop_venv()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            str(python),
            str(PEER_SCRIPT),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            limit=64 * 1024 * 1024,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while not (self.peer_id and self.addr):
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("py-libp2p peer exited during start")
                kind, _, value = line.strip().partition(" ")
                if kind == "peer":
                    self.peer_id = value
                elif kind == "listen" and not self.addr:
                    self.addr = value
        self._reader = asyncio.create_task(self._read_lines())
        return self

    async def _read_lines(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line_b := await self.proc.stdout.readline():
            line = line_b.decode().strip()
            self.lines.append(line)
            if line.startswith("recv "):
                _, topic, data = line.split(" ", 2)
                self.received.put_nowait((topic, bytes.fromhex(data)))
            else:
                self._replies.put_nowait(line)

    async def command(self, line: str, timeout: float = 30.0) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            return await self._replies.get()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
                proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
