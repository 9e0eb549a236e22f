"""Dead letters: the original bytes unchanged as the value, the reason and origin in headers."""

from __future__ import annotations

import traceback
from pathlib import Path

REASON = "oddstream.dlq.reason"
ORIGIN_TOPIC = "oddstream.dlq.topic"
ORIGIN_PARTITION = "oddstream.dlq.partition"
ORIGIN_OFFSET = "oddstream.dlq.offset"
STAGE = "oddstream.dlq.stage"


def dead_letter_headers(
    reason: str, topic: str, partition: int, offset: int, stage: str
) -> list[tuple[str, bytes]]:
    """Headers that say why a record was rejected and where it came from."""
    return [
        (REASON, reason.encode()[:4096]),
        (ORIGIN_TOPIC, topic.encode()),
        (ORIGIN_PARTITION, str(partition).encode()),
        (ORIGIN_OFFSET, str(offset).encode()),
        (STAGE, stage.encode()),
    ]


def processing_failure(exc: BaseException, frames: int = 3) -> str:
    """A dead-letter reason for an unexpected exception: its type, text and last frames."""
    where = traceback.extract_tb(exc.__traceback__)[-frames:]
    trace = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where))
    return f"processing failed: {type(exc).__name__}: {str(exc)[:300]} (at {trace})"
