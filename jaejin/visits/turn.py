"""ICE servers for a browser joining a visit: STUN, and TURN with short-lived credentials.

TURN relays media for participants behind strict NATs, so its credentials must not be a
long-lived password in every page. coturn's REST scheme (`use-auth-secret`) lets the server mint
credentials from a secret it shares with coturn: the username is `<expiry-unix>:<user-id>` and the
credential is base64(HMAC-SHA1(secret, username)). coturn recomputes the HMAC and refuses the
username once its expiry has passed, so a leaked page is useless after the lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

STUN_SCHEMES = ("stun:", "stuns:")
TURN_SCHEMES = ("turn:", "turns:")


class IceServerSettings(Protocol):
    """The settings read here (`jaejin.core.config.Settings` has exactly these)."""

    @property
    def stun_urls(self) -> Sequence[str]: ...

    @property
    def turn_urls(self) -> Sequence[str]: ...

    @property
    def turn_secret(self) -> str | None: ...

    @property
    def turn_credential_ttl_seconds(self) -> int: ...


class IceConfigurationError(ValueError):
    """The STUN/TURN settings cannot produce usable ICE servers."""


def turn_username(user_id: str, expires_at_unix: int) -> str:
    if not user_id or ":" in user_id:
        # coturn reads the expiry up to the first ':'; a second one would make the name ambiguous.
        raise IceConfigurationError(f"TURN user id must be non-empty without ':', got {user_id!r}")
    return f"{expires_at_unix}:{user_id}"


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def ice_servers(config: IceServerSettings, user_id: str, now: datetime) -> list[dict[str, object]]:
    """RTCIceServer dictionaries for `RTCPeerConnection({iceServers})`, valid from `now`."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise IceConfigurationError("`now` must be timezone-aware")
    stun_urls = list(config.stun_urls)
    turn_urls = list(config.turn_urls)
    for url in stun_urls:
        if not url.startswith(STUN_SCHEMES):
            raise IceConfigurationError(f"STUN url must start with stun: or stuns:, got {url!r}")
    for url in turn_urls:
        if not url.startswith(TURN_SCHEMES):
            raise IceConfigurationError(f"TURN url must start with turn: or turns:, got {url!r}")
    servers: list[dict[str, object]] = []
    if stun_urls:
        servers.append({"urls": stun_urls})
    if turn_urls:
        secret = config.turn_secret
        if not secret:
            raise IceConfigurationError("TURN urls are configured but the TURN secret is not")
        lifetime = config.turn_credential_ttl_seconds
        if lifetime <= 0:
            raise IceConfigurationError(f"TURN credential lifetime must be positive: {lifetime}")
        username = turn_username(user_id, int(now.timestamp()) + lifetime)
        credential = turn_credential(secret, username)
        servers.append({"urls": turn_urls, "username": username, "credential": credential})
    return servers
