"""Answers gzipped from pieces compressed once decode, with the decoders clients use, to
exactly the pieces' text; the slot search's gzipped answer is the plain one."""

from __future__ import annotations

import gzip
import zlib
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.scheduling import wire
from tests.scheduling.test_booking_fixtures import SchedulingWorld

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

texts = st.binary(max_size=3000) | st.text(max_size=400).map(str.encode)


@settings(max_examples=150, deadline=None)
@given(raws=st.lists(texts, max_size=12), levels=st.lists(st.sampled_from([1, 6, 9]),
                                                          min_size=12, max_size=12))
def test_pieces_gzip_to_their_concatenation(raws, levels):
    pieces = [wire.Piece(raw, level) for raw, level in zip(raws, levels, strict=False)]
    body = wire.gzipped(pieces)
    assert gzip.decompress(body) == b"".join(raws)
    # As browsers and HTTP libraries do: zlib in gzip mode, to the end of the member.
    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    assert decoder.decompress(body) + decoder.flush() == b"".join(raws)
    assert decoder.eof and not decoder.unused_data


def test_a_piece_is_compressed_once_and_reused_anywhere():
    day = wire.Piece(b'{"start":"2026-11-24T09:00:00+09:00"}' * 40)
    first = day.deflated
    assert day.deflated is first
    array = wire.json_array([day, wire.Piece(b"1", wire.ONE_OFF_LEVEL), day])
    assert gzip.decompress(wire.gzipped(array)) == b"[" + day.raw + b",1," + day.raw + b"]"
    assert wire.joined(wire.json_array([])) == b"[]"


def test_a_long_search_is_gzipped_and_equals_the_plain_answer(client, world: SchedulingWorld,
                                                              system_a):
    query = {"start": world.day.isoformat(),
             "end": (world.day + timedelta(days=40)).isoformat(), "tz": "Asia/Kathmandu",
             "visit_type": "follow_up", "mode": "video"}
    path = f"/api/v1/practitioners/{world.practitioner_a}/slots"
    assert client.post("/api/v1/appointments", json=world.booking("10:00"),
                       headers=system_a).status_code == 201
    plain = client.get(path, params=query, headers=system_a | {"Accept-Encoding": "identity"})
    zipped = client.get(path, params=query, headers=system_a | {"Accept-Encoding": "gzip"})
    assert plain.status_code == zipped.status_code == 200
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 5
    # httpx decoded the gzip member: the same slots, the booked one left out.
    assert zipped.content == plain.content
    starts = [slot["start"] for slot in zipped.json()]
    assert world.at("10:00").isoformat() not in starts
    assert world.at("10:15").isoformat() in starts
