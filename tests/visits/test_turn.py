"""TURN credentials follow coturn's shared-secret scheme, so coturn accepts them until expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from jaejin.visits.turn import IceConfigurationError, ice_servers


@dataclass
class Settings:
    stun_urls: list[str] = field(default_factory=lambda: ["stun:stun.jaejin.example:3478"])
    turn_urls: list[str] = field(
        default_factory=lambda: ["turn:turn.jaejin.example:3478?transport=udp",
                                 "turns:turn.jaejin.example:5349?transport=tcp"]
    )
    turn_secret: str | None = "north-seoul-coturn-secret"
    turn_credential_ttl_seconds: int = 3600


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_turn_credentials_are_the_hmac_of_the_expiring_username() -> None:
    servers = ice_servers(Settings(), "dr-kim", NOW)
    assert servers[0] == {"urls": ["stun:stun.jaejin.example:3478"]}
    turn = servers[1]
    expiry = int(NOW.timestamp()) + 3600
    assert expiry == 1772445600
    assert turn["username"] == "1772445600:dr-kim"
    expected = base64.b64encode(
        hmac.new(b"north-seoul-coturn-secret", b"1772445600:dr-kim", hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected
    assert turn["urls"] == Settings().turn_urls


def test_a_secret_change_or_later_time_gives_different_credentials() -> None:
    first = ice_servers(Settings(), "dr-kim", NOW)[1]
    rotated = ice_servers(Settings(turn_secret="rotated"), "dr-kim", NOW)[1]
    assert first["username"] == rotated["username"]
    assert first["credential"] != rotated["credential"]


def test_stun_only_configuration_gives_no_turn_entry() -> None:
    assert ice_servers(Settings(turn_urls=[], turn_secret=None), "p1", NOW) == [
        {"urls": ["stun:stun.jaejin.example:3478"]}
    ]
    assert ice_servers(Settings(stun_urls=[], turn_urls=[]), "p1", NOW) == []


@pytest.mark.parametrize(
    ("settings", "user_id", "now", "message"),
    [
        (Settings(turn_secret=None), "p1", NOW, "secret"),
        (Settings(turn_credential_ttl_seconds=0), "p1", NOW, "lifetime"),
        (Settings(stun_urls=["https://stun.example"]), "p1", NOW, "stun:"),
        (Settings(turn_urls=["stun:wrong.example"]), "p1", NOW, "turn:"),
        (Settings(), "p:1", NOW, "':'"),
        (Settings(), "p1", datetime(2026, 3, 2, 9, 0), "timezone-aware"),  # noqa: DTZ001
    ],
)
def test_unusable_configuration_is_refused_with_the_reason(settings, user_id, now, message) -> None:
    with pytest.raises(IceConfigurationError, match=message):
        ice_servers(settings, user_id, now)
