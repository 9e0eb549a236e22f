"""Partition snapshots as the changelog holds them (consumers/worker/snapshots.py): what one
restores is what was sealed; bytes not sealed with the deployment's key, for this partition,
by this version, are refused before anything deserialises them."""

from __future__ import annotations

import itertools
import pickle
import zlib
from pathlib import Path

import pytest

from consumers.worker import snapshots
from consumers.worker.snapshots import (
    SnapshotRefused,
    dump_state,
    load_state,
    manifest_chunk_keys,
    open_sealed,
    seal,
)
from oddstream.simulator.model import MarketSimulator
from streams.processor import Emission, PartitionProcessor

KEY = b"a-state-key-of-this-deployment-32b"
STATE_KEY = b"oddstream.odds:3"
pytestmark = pytest.mark.pure


def through_the_changelog(processor: PartitionProcessor) -> PartitionProcessor:
    """What a restart restores: sealed, written, opened and loaded."""
    sealed = seal(dump_state(processor), STATE_KEY, KEY, generation=processor.offset)
    return load_state(open_sealed(sealed.manifest, STATE_KEY, KEY, dict(sealed.chunks)))


def fed(events: int, processor: PartitionProcessor | None = None, start: int = 0) -> tuple[
    PartitionProcessor, list[Emission]
]:  # fmt: skip
    processor = processor or PartitionProcessor(partition=3)
    sim = MarketSimulator(seed=5, start_ms=1_767_225_600_000, markets=6)
    out: list[Emission] = []
    for offset, event in enumerate(itertools.islice(sim.events(), events)):
        if offset >= start:
            out += processor.process(offset, event.type, event.record, 0).emissions
    return processor, out


def trap(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when it is loaded: what an attacker would write."""

    class Trap:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    return pickle.dumps(Trap())


def test_a_restored_snapshot_goes_on_exactly_as_the_processor_it_was_taken_from() -> None:
    _, expected = fed(4_000)
    first, before = fed(2_500)
    restored = through_the_changelog(first)
    assert restored.offset == 2_499
    _, after = fed(4_000, restored, start=2_500)
    assert before + after == expected


def test_a_large_state_is_chunked_and_every_chunk_is_needed(tmp_path: Path) -> None:
    processor, _ = fed(3_000)
    sealed = seal(dump_state(processor), STATE_KEY, KEY, generation=processor.offset, chunk_bytes=1024)
    assert len(sealed.chunks) > 3 and all(len(chunk) <= 1024 for _, chunk in sealed.chunks)
    assert len(sealed.manifest) < 200
    assert [k for k, _ in sealed.chunks] == manifest_chunk_keys(sealed.manifest, STATE_KEY)
    assert sealed.chunks[0][0] == b"oddstream.odds:3/2999/0"
    chunks = dict(sealed.chunks)
    assert load_state(open_sealed(sealed.manifest, STATE_KEY, KEY, chunks)).offset == 2_999

    missing = {k: v for k, v in chunks.items() if not k.endswith(b"/1")}
    with pytest.raises(SnapshotRefused, match=r"unreadable: chunk oddstream\.odds:3/2999/1 is missing"):
        open_sealed(sealed.manifest, STATE_KEY, KEY, missing)
    # a chunk replaced by one of the same size (an attacker's, or another snapshot's)
    altered = {**chunks, sealed.chunks[2][0]: bytes(len(sealed.chunks[2][1]))}
    with pytest.raises(SnapshotRefused, match="forged: its MAC does not match"):
        open_sealed(sealed.manifest, STATE_KEY, KEY, altered)


def test_bytes_not_sealed_with_the_key_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payload = trap(marker)
    foreign = seal(payload, STATE_KEY, b"someone-else's-key", generation=7)
    attempts = {
        "sealed with another key": foreign.manifest,
        "a bare pickle": payload,
        "a bare compressed pickle": zlib.compress(payload),
        "format 1 (OSP1)": b"OSP1" + zlib.compress(payload, 1),
        "our header, the body swapped": seal(dump_state(PartitionProcessor()), STATE_KEY, KEY, 0).manifest[
            :-8
        ]
        + zlib.compress(payload)[-8:],
        "empty": b"",
        "a truncated header": foreign.manifest[:9],
    }
    for name, blob in attempts.items():
        with pytest.raises(SnapshotRefused) as refused:
            load_state(open_sealed(blob, STATE_KEY, KEY))
        assert refused.value.kind in ("forged", "outdated"), name
    assert not marker.exists()
    # the same trap sealed with the right key would run: the MAC is what keeps it out
    sealed = seal(payload, STATE_KEY, KEY, generation=7)
    with pytest.raises(SnapshotRefused, match="unreadable: holds a TextIOWrapper"):
        load_state(open_sealed(sealed.manifest, STATE_KEY, KEY))
    assert marker.exists()


def test_every_flipped_byte_is_refused() -> None:
    sealed = seal(dump_state(PartitionProcessor(partition=3)), STATE_KEY, KEY, generation=11)
    blob = sealed.manifest
    for at in range(len(blob)):
        flipped = blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]
        with pytest.raises(SnapshotRefused):
            open_sealed(flipped, STATE_KEY, KEY)


def test_a_snapshot_of_another_partition_is_refused() -> None:
    sealed = seal(dump_state(PartitionProcessor(partition=4)), b"oddstream.odds:4", KEY, generation=11)
    with pytest.raises(SnapshotRefused, match="forged"):
        open_sealed(sealed.manifest, STATE_KEY, KEY)


def test_a_snapshot_of_another_version_is_outdated(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = seal(dump_state(PartitionProcessor(partition=3)), STATE_KEY, KEY, generation=11)
    monkeypatch.setattr(snapshots, "STATE_VERSION", snapshots.STATE_VERSION + 1)
    with pytest.raises(SnapshotRefused) as refused:
        open_sealed(sealed.manifest, STATE_KEY, KEY)
    assert refused.value.kind == "outdated"
    assert f"written by state={snapshots.STATE_VERSION - 1} river=" in refused.value.reason
    assert f"this worker is state={snapshots.STATE_VERSION} river=" in refused.value.reason


def test_the_worker_refuses_the_public_development_state_key_outside_development() -> None:
    from pydantic import SecretStr

    from consumers.worker.app import check_state_key
    from oddstream.errors import ConfigError
    from oddstream.settings import Settings

    with pytest.raises(ConfigError, match="ODDSTREAM_WORKER_STATE_KEY is the public development default"):
        check_state_key(Settings())
    check_state_key(Settings(development=True))  # what `oddstream up` sets
    check_state_key(Settings(worker_state_key=SecretStr("a-real-key-of-the-operator")))


def test_the_state_layout_is_pinned_to_the_state_version() -> None:
    """A change to a dataclass of streams/ changes what snapshots hold: bump STATE_VERSION (so
    the worker rebuilds instead of loading old state into new code) and pin the new digest."""
    import hashlib

    digest = hashlib.sha256(snapshots.state_layout().encode()).hexdigest()[:16]
    assert (snapshots.STATE_VERSION, digest) == (6, "cedd59324708bc47"), snapshots.state_layout()
