"""Who may use the relay: its own page only.

Four checks, in :func:`access_middleware`, before any handler runs:

* **Host.** A request must name this server: ``localhost``, ``127.0.0.1``, ``[::1]``, the
  address it was bound to or reached on, each with the port it listens on; or a name given
  with ``--allow-host`` (a reverse proxy's, any port). A page on another name that rebinds
  its DNS to this machine (*DNS rebinding*) sends its own name and is refused (403).
* **Origin.** ``POST`` requests from a browser carry ``Origin``; it must be this server
  (same scheme-less host and port as ``Host``) or an ``--allow-host`` name. Clients that are
  not browsers send none and pass. The data channel is negotiated inside the offer, so this
  check covers it too.
* **Content type.** ``POST /offer`` must be ``application/json`` (415 otherwise): a web page
  can send ``text/plain`` across origins without asking, but not JSON.
* **Token.** When the relay has one (``--source`` mode, or a ``--host`` that is not
  loopback), ``/config`` and ``/offer`` need it in the ``X-Sharpcam-Token`` header (the page
  takes it from its address, ``?token=...``, as printed at start-up). It is compared in
  constant time and never logged. The page's static files need no token.

No response carries CORS headers: other origins cannot read anything the relay answers.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

#: The header the page sends the token in.
TOKEN_HEADER = "X-Sharpcam-Token"
#: The page's query parameter that carries the token.
TOKEN_PARAM = "token"
#: Paths that need the token when the relay has one (the page's files do not).
GUARDED_PATHS = frozenset({"/config", "/offer"})
#: Names of this machine every relay answers to (with its port).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

_DEFAULT_PORTS = {"http": 80, "https": 443}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class AccessPolicy:
    """What the relay accepts.

    Args:
        token: required on ``/config`` and ``/offer`` when set; ``None``: no token.
        hosts: more names of this server (the ``--host`` it was bound to), accepted with
            its port like the loopback names.
        allow_hosts: names a reverse proxy forwards (``--allow-host``), any port.

    Raises:
        ValueError: an empty token or host name.
    """

    token: str | None = None
    hosts: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ValueError("the token must not be empty")
        for name in (*self.hosts, *self.allow_hosts):
            if not name or split_host(name) is None:
                raise ValueError(f"not a host name: {name!r}")

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the token (constant time); always true without one."""
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Name:port"`` → ``("name", port)``; ``"[::1]:8080"`` → ``("::1", 8080)``; no port:
    ``None`` for it. ``None`` when ``value`` is not a host (empty, bad port, stray bracket)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        name, port_text = value, None
    else:
        name, port_text = value, None
    if not name or any(c in name for c in "/@?# "):
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def _names(hosts: tuple[str, ...]) -> set[str]:
    return {parsed[0] for parsed in map(split_host, hosts) if parsed is not None}


def host_refusal(policy: AccessPolicy, host: str | None, local: tuple[str, int]) -> str | None:
    """Why a request with ``Host: host`` that arrived on ``local`` (address, port) is
    refused, or ``None`` when it names this server."""
    parsed = split_host(host or "")
    if parsed is None:
        return "the request has no valid Host header"
    name, port = parsed
    if name in _names(policy.allow_hosts):
        return None
    own = LOOPBACK_NAMES | {local[0].lower()} | _names(policy.hosts)
    if name in own and (port or 80) == local[1]:
        return None
    return (
        f"this relay does not answer to the name {name!r}; open it by the address it "
        "printed (or start it with --allow-host NAME behind a reverse proxy)"
    )


def origin_refusal(policy: AccessPolicy, origin: str | None, host: str | None) -> str | None:
    """Why a request from page ``origin`` to ``Host: host`` is refused, or ``None`` (no
    ``Origin``: not a browser; or the same origin; or an ``--allow-host`` name)."""
    if origin is None:
        return None
    parts = urlsplit(origin)
    refused = f"requests from pages of {origin!r} are refused; use the relay's own page"
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return refused
    try:
        origin_port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return refused
    name = parts.hostname.lower()
    if name in _names(policy.allow_hosts):
        return None
    target = split_host(host or "")
    if target is None or target[0] != name:
        return refused
    if (target[1] or _DEFAULT_PORTS[parts.scheme]) != origin_port:
        return refused
    return None


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header value is JSON (parameters such as charset allowed)."""
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def _refuse(status: int, message: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def access_middleware(policy: AccessPolicy, headers: dict[str, str]) -> Handler:
    """An aiohttp middleware enforcing ``policy``; refusals are JSON ``{"error": ...}`` with
    ``headers`` (403 for Host, Origin and token, 415 for the content type)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = (str(sockname[0]), int(sockname[1])) if sockname else ("", 0)
        why = host_refusal(policy, request.headers.get("Host"), local)
        if why is None and request.method == "POST":
            why = origin_refusal(policy, request.headers.get("Origin"), request.headers["Host"])
        if why is not None:
            return _refuse(403, why, headers)
        if request.path in GUARDED_PATHS and not policy.token_ok(request.headers.get(TOKEN_HEADER)):
            return _refuse(
                403,
                "this relay needs its access token: open the full address `sharpcam serve` "
                f"printed (it ends in ?{TOKEN_PARAM}=...)",
                headers,
            )
        if request.method == "POST" and not is_json(request.headers.get("Content-Type")):
            return _refuse(415, "the offer must be sent as Content-Type: application/json", headers)
        return await handler(request)

    return check
