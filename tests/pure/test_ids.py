"""The worker's fast UUIDv5 strings equal the standard library's, for any namespace and name."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.ids import uuid5
from streams.processor import NAMESPACE

pytestmark = pytest.mark.pure


@given(st.uuids(), st.text())
def test_equal_to_the_standard_librarys_uuid5(namespace: uuid.UUID, name: str) -> None:
    assert uuid5(namespace, name) == str(uuid.uuid5(namespace, name))


def test_a_window_id_is_unchanged() -> None:
    """Ids written before stay the same: ClickHouse collapses a replayed result on them."""
    assert uuid5(NAMESPACE, "price:m1|home|b1:0:60000") == str(
        uuid.uuid5(NAMESPACE, "price:m1|home|b1:0:60000")
    )
