"""A partition's state as the changelog holds it: sealed, versioned, chunked. No I/O.

Format 2 (``OSS2``), all integers big-endian::

    b"OSS2" | u16 tag length | tag | u32 chunks | u64 generation | 32-byte MAC | body

* ``tag`` names what wrote the body, ``state=<STATE_VERSION> river=<version>
  python=<major.minor>``; a snapshot whose tag differs from this process's is *outdated*
  and is not read (the worker rebuilds the partition from the source log instead).
* The MAC is HMAC-SHA256, keyed by ``ODDSTREAM_WORKER_STATE_KEY``, over a domain label,
  the state key (``<topic>:<partition>``, so a snapshot cannot be moved to another
  partition), the header before the MAC and the body. Nothing is decompressed or unpickled before it
  checks: bytes written to the changelog by anyone without the key are refused as
  *forged*, never executed.
* ``body`` is ``zlib(pickle(PartitionProcessor))`` (River's models persist by pickle). It
  is inline when ``chunks`` is 0; otherwise it is split into ``chunks`` records under the
  keys ``<state key>/<generation>/<i>``, written before the manifest, so one record never
  nears the changelog's 16 MiB message cap however large a partition's state grows. The
  generation is unique per snapshot (the worker uses the time in ns), so a crash between
  chunks and manifest leaves the previous manifest pointing at its own, complete chunks.

Format 1 (``OSP1``, an unauthenticated pickle) is never read: it is outdated.

Example::

    sealed = seal(dump_state(processor), b"oddstream.odds:3", key, generation=time.time_ns())
    processor = load_state(open_sealed(sealed.manifest, b"oddstream.odds:3", key, dict(sealed.chunks)))
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal

from streams.processor import PartitionProcessor

MAGIC = b"OSS2"
# bump with any change to what a PartitionProcessor pickles (a field added, renamed or
# retyped in a dataclass of streams/): snapshots of another version are rebuilt from the
# log. tests/pure/test_snapshots.py pins state_layout()'s digest to this number.
STATE_VERSION = 6
CHUNK_BYTES = 1024 * 1024
_HEAD = struct.Struct(">IQ")  # chunks, generation
_MAC_BYTES = 32
_DOMAIN = b"oddstream.partition-snapshot\x00"

Refusal = Literal["forged", "outdated", "unreadable"]


class SnapshotRefused(Exception):
    """A snapshot that is not read: ``kind`` is forged, outdated or unreadable."""

    def __init__(self, kind: Refusal, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: Refusal = kind
        self.reason = reason


@dataclass(frozen=True)
class Sealed:
    """What one snapshot writes: the chunks (if any) first, then the manifest under the state key."""

    manifest: bytes
    chunks: list[tuple[bytes, bytes]]


def state_tag() -> bytes:
    """What this process writes and reads: the state layout, River and Python versions."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"state={STATE_VERSION} river={version('river')} python={python}".encode()


def state_layout() -> str:
    """Every dataclass of the analytics core with its fields and their types: what a
    snapshot's pickle is made of."""
    import dataclasses
    import importlib
    import inspect
    import pkgutil

    import streams

    lines = []
    for module_info in sorted(pkgutil.iter_modules(streams.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"streams.{module_info.name}")
        for name, cls in sorted(inspect.getmembers(module, dataclasses.is_dataclass)):
            if isinstance(cls, type) and cls.__module__ == module.__name__:
                fields = ", ".join(f"{f.name}: {f.type}" for f in dataclasses.fields(cls))
                lines.append(f"{cls.__module__}.{name}({fields})")
    return "\n".join(lines)


def dump_state(processor: PartitionProcessor) -> bytes:
    """The processor's state (on the event loop: it must not change meanwhile)."""
    return pickle.dumps(processor, protocol=5)


def seal(
    state: bytes, state_key: bytes, secret: bytes, generation: int, chunk_bytes: int = CHUNK_BYTES
) -> Sealed:
    """Compress, authenticate and (when large) chunk a :func:`dump_state` result."""
    tag = state_tag()
    body = zlib.compress(state, 1)
    generation = max(generation, 0)
    if len(body) <= chunk_bytes:
        header = _header(tag, 0, generation)
        return Sealed(header + _mac(secret, state_key, header, body) + body, [])
    pieces = [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)]
    header = _header(tag, len(pieces), generation)
    keys = chunk_keys(state_key, generation, len(pieces))
    return Sealed(header + _mac(secret, state_key, header, body), list(zip(keys, pieces, strict=True)))


def open_sealed(
    manifest: bytes, state_key: bytes, secret: bytes, chunks: Mapping[bytes, bytes] | None = None
) -> bytes:
    """The state in a sealed snapshot, checked; raises :class:`SnapshotRefused`.

    ``chunks`` holds the chunk records by key (the table, for a chunked snapshot). The MAC
    is checked before anything else is done with the bytes, then the tag; nothing is
    decompressed before both pass."""
    if not manifest.startswith(MAGIC):
        if manifest.startswith(b"OSP1"):
            raise SnapshotRefused("outdated", "format 1 (an unauthenticated pickle), never read")
        raise SnapshotRefused("forged", f"not an oddstream snapshot (first bytes {manifest[:4].hex()})")
    parsed = _parse(manifest)
    if parsed is None:
        raise SnapshotRefused("forged", "truncated header")
    header, tag, count, generation, mac = parsed
    at = len(header) + _MAC_BYTES
    if count == 0:
        body = manifest[at:]
    else:
        pieces = []
        for key in chunk_keys(state_key, generation, count):
            piece = (chunks or {}).get(key)
            if piece is None:
                raise SnapshotRefused("unreadable", f"chunk {key.decode(errors='replace')} is missing")
            pieces.append(piece)
        body = b"".join(pieces)
    if not hmac.compare_digest(mac, _mac(secret, state_key, header, body)):
        raise SnapshotRefused(
            "forged",
            "its MAC does not match (not written with this deployment's state key for this partition)",
        )
    if tag != state_tag():
        raise SnapshotRefused(
            "outdated", f"written by {tag.decode(errors='replace')}, this worker is {state_tag().decode()}"
        )
    try:
        return zlib.decompress(body)
    except zlib.error as exc:
        raise SnapshotRefused("unreadable", f"body does not decompress: {exc}") from exc


def load_state(state: bytes) -> PartitionProcessor:
    """The processor in an authenticated state (only ever called after :func:`open_sealed`)."""
    try:
        processor = pickle.loads(state)
    except Exception as exc:  # authentic but not loadable by this code: rebuild
        raise SnapshotRefused("unreadable", f"does not load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(processor, PartitionProcessor):
        raise SnapshotRefused("unreadable", f"holds a {type(processor).__name__}, not a PartitionProcessor")
    return processor


def chunk_keys(state_key: bytes, generation: int, chunks: int) -> list[bytes]:
    return [state_key + f"/{generation}/{i}".encode() for i in range(chunks)]


def manifest_chunk_keys(manifest: bytes, state_key: bytes) -> list[bytes]:
    """The chunk keys a manifest refers to (none for an inline or unparsable one)."""
    parsed = _parse(manifest) if manifest.startswith(MAGIC) else None
    return chunk_keys(state_key, parsed[3], parsed[2]) if parsed else []


def _parse(manifest: bytes) -> tuple[bytes, bytes, int, int, bytes] | None:
    """(header before the MAC, tag, chunk count, generation, MAC) of a format-2 manifest, or
    None when it is truncated or names an absurd number of chunks."""
    try:
        (tag_length,) = struct.unpack_from(">H", manifest, len(MAGIC))
        end = len(MAGIC) + 2 + tag_length
        count, generation = _HEAD.unpack_from(manifest, end)
    except struct.error:
        return None
    header = manifest[: end + _HEAD.size]
    mac = manifest[len(header) : len(header) + _MAC_BYTES]
    if len(mac) != _MAC_BYTES or count > 1_000_000:
        return None
    return header, manifest[len(MAGIC) + 2 : end], count, generation, mac


def is_chunk_of(key: bytes, state_key: bytes) -> bool:
    return key.startswith(state_key + b"/")


def _header(tag: bytes, chunks: int, generation: int) -> bytes:
    return MAGIC + struct.pack(">H", len(tag)) + tag + _HEAD.pack(chunks, generation)


def _mac(secret: bytes, state_key: bytes, header: bytes, body: bytes) -> bytes:
    digest = hmac.new(secret, _DOMAIN + state_key + b"\x00" + header, hashlib.sha256)
    digest.update(body)
    return digest.digest()
