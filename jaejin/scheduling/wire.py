"""Large JSON answers assembled from cached pieces, and gzipped from pieces compressed once.

A 60-day slot search answers hundreds of kilobytes, most of it whole days that are the same for
every search (the same hours give the same slots). Compressing the whole answer again for each
request would cost more than finding the slots, so each piece keeps its own compressed form:

- a piece's DEFLATE form comes from a fresh compressor ended with a sync flush: it refers to
  nothing before it and ends on a byte boundary without ending the stream (RFC 1951 allows any
  sequence of non-final blocks), so such forms can be concatenated in any order;
- a gzip member (RFC 1952) is a fixed header, those blocks, one empty final block, and the
  CRC-32 and length of the uncompressed text (the CRC runs over the pieces' text, at memory
  speed).

The result is one ordinary gzip stream that every client decodes (tests decode it with zlib,
as browsers and HTTP libraries do).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

#: ID1 ID2, CM=deflate, no flags, no modification time, no extra flags, OS unknown.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: An empty final block: ends the DEFLATE stream after the pieces.
_FINAL_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)
#: Pieces kept in a cache are compressed harder (once) than pieces made for one answer.
CACHED_LEVEL = 6
ONE_OFF_LEVEL = 1


def deflate_piece(raw: bytes, level: int = CACHED_LEVEL) -> bytes:
    """Raw DEFLATE blocks of `raw` that can be placed anywhere in a stream."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)


class Piece:
    """A run of answer text and, once asked for, its compressed form (kept with it)."""

    __slots__ = ("_deflated", "level", "raw")

    def __init__(self, raw: bytes, level: int = CACHED_LEVEL) -> None:
        self.raw = raw
        self.level = level
        self._deflated: bytes | None = None

    @property
    def deflated(self) -> bytes:
        # Two threads may compress the same piece at once: both get the same bytes.
        if self._deflated is None:
            self._deflated = deflate_piece(self.raw, self.level)
        return self._deflated

    def __repr__(self) -> str:
        return f"Piece({self.raw[:40]!r}{'...' if len(self.raw) > 40 else ''})"


OPEN_ARRAY = Piece(b"[")
COMMA = Piece(b",")
CLOSE_ARRAY = Piece(b"]")


def json_array(items: Iterable[Piece]) -> list[Piece]:
    """The pieces of a JSON array whose items (or runs of comma-separated items) are `items`."""
    pieces = [OPEN_ARRAY]
    for item in items:
        if len(pieces) > 1:
            pieces.append(COMMA)
        pieces.append(item)
    pieces.append(CLOSE_ARRAY)
    return pieces


def joined(pieces: Sequence[Piece]) -> bytes:
    return b"".join(piece.raw for piece in pieces)


def size(pieces: Sequence[Piece]) -> int:
    return sum(len(piece.raw) for piece in pieces)


def gzipped(pieces: Sequence[Piece]) -> bytes:
    """One gzip member whose content is `joined(pieces)`."""
    crc = 0
    length = 0
    for piece in pieces:
        crc = zlib.crc32(piece.raw, crc)
        length += len(piece.raw)
    return b"".join((GZIP_HEADER, *(piece.deflated for piece in pieces), _FINAL_BLOCK,
                     struct.pack("<II", crc, length & 0xFFFFFFFF)))
