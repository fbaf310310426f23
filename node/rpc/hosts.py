"""Which ``Host`` headers the RPC answers: the defence against DNS rebinding.

A web page on ``http://evil.example`` cannot read a reply from ``127.0.0.1:26657``
(another origin), but its attacker can make ``evil.example`` resolve to 127.0.0.1 after
the page loaded: the browser then sends the page's requests to the node as same-origin
requests, with ``Host: evil.example:26657``. A name the node does not know in the Host
header is therefore refused. What is allowed cannot be rebound by a stranger:

- IP literals (``127.0.0.1:26657``, ``[::1]``): a browser puts an IP in the Host header
  only when the page's own origin is that IP;
- ``localhost`` and names under ``.localhost``, which resolve to loopback only;
- the host name the RPC is configured to listen on, and the names in ``rpc.allowed_hosts``
  (a reverse proxy's public name, a docker service name); ``"*"`` there turns the check
  off for a proxy that already checks the Host itself.

A request without a Host header (HTTP/1.0 tools) is answered: browsers always send one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["HostPolicy", "host_name"]


def host_name(header: str) -> str:
    """The name part of a Host header: no port, no brackets, lower case, no final dot."""
    text = header.strip()
    if text.startswith("["):
        name, _, _ = text[1:].partition("]")
    elif text.count(":") == 1:
        name = text.partition(":")[0]
    else:
        name = text  # a bare name, or an unbracketed IPv6 literal
    return name.lower().rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    def __init__(self, names: Iterable[str] = ()) -> None:
        self.any = False
        self.names: set[str] = set()
        for n in names:
            if n.strip() == "*":
                self.any = True
            elif n.strip():
                self.names.add(host_name(n))

    def allows(self, header: str | None) -> bool:
        if header is None or self.any:
            return True
        name = host_name(header)
        if not name:
            return False
        if name == "localhost" or name.endswith(".localhost"):
            return True
        return name in self.names or _is_ip(name)
