"""Standard Webhooks signing, endpoint registry and the SSRF guard."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consumers.dispatcher.registry import EndpointRegistry
from consumers.dispatcher.signing import endpoint_secret, sign
from consumers.dispatcher.ssrf import check_address, check_url
from oddstream.errors import UnsafeWebhookTarget

pytestmark = pytest.mark.pure


def test_signature_verifies_with_the_reference_library_and_tampering_fails() -> None:
    secret = endpoint_secret("master", "ep1")
    body = b'{"type":"OddsWindowUpdated","data":{}}'
    headers = sign([secret], "msg_1", int(time.time()), body)
    assert set(headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint_secret("master", "ep2")).verify(body, headers)


def test_endpoint_secrets_are_stable_and_distinct() -> None:
    assert endpoint_secret("m", "a") == endpoint_secret("m", "a") != endpoint_secret("m", "b")
    assert endpoint_secret("m", "a").startswith("whsec_")


def test_registry_applies_registrations_and_tombstones() -> None:
    registry = EndpointRegistry()
    registry.apply("a", {"endpoint_id": "a", "url": "https://x", "event_types": [], "active": True})
    registry.apply("b", {"endpoint_id": "b", "url": "https://y", "event_types": ["Other"], "active": True})
    registry.apply("c", {"endpoint_id": "c", "url": "https://z", "event_types": [], "active": False})
    assert [e.endpoint_id for e in registry.for_event("OddsWindowUpdated")] == ["a"]
    registry.apply("a", None)
    assert registry.for_event("OddsWindowUpdated") == [] and len(registry) == 2


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1", "::ffff:127.0.0.1", "224.0.0.1"]
)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        check_address(address, allow_private=False)


def test_loopback_allowed_only_for_local_development_and_metadata_never() -> None:
    check_address("127.0.0.1", allow_private=True)
    check_address("93.184.216.34", allow_private=False)
    with pytest.raises(UnsafeWebhookTarget):
        check_address("169.254.169.254", allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://x.com/", "http://x.com/", "https://user:pw@x.com/", "https:///nohost"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        check_url(url, allow_private=False)


def test_window_events_go_out_as_finals_unless_every_update_was_asked_for() -> None:
    registry = EndpointRegistry()
    base = {"url": "https://x", "event_types": ["OddsWindowUpdated", "AlertChanged"], "active": True}
    registry.apply("finals", {**base, "endpoint_id": "finals"})  # a v1 record: no window_updates field
    registry.apply("every", {**base, "endpoint_id": "every", "window_updates": True})
    assert [e.endpoint_id for e in registry.for_event("OddsWindowUpdated", final=False)] == ["every"]
    assert [e.endpoint_id for e in registry.for_event("OddsWindowUpdated", final=True)] == ["finals", "every"]
    assert len(registry.for_event("AlertChanged")) == 2  # events without "final" count as final


def test_the_dispatcher_refuses_the_public_development_secret_outside_development() -> None:
    from pydantic import SecretStr

    from consumers.dispatcher.service import check_master_secret
    from oddstream.errors import ConfigError
    from oddstream.settings import Settings

    with pytest.raises(ConfigError, match="public development default"):
        check_master_secret(Settings())
    check_master_secret(Settings(development=True))  # what `oddstream up` sets
    check_master_secret(Settings(webhook_master_secret=SecretStr("a-real-secret-of-the-operator")))


def test_registry_records_are_authentic_only_with_the_master_secrets_signature() -> None:
    from consumers.dispatcher.signing import (
        REGISTRY_SIGNATURE,
        registry_record_is_authentic,
        registry_signature,
    )

    value = b"\xc3\x01record"
    good = [(REGISTRY_SIGNATURE, registry_signature("master", b"ep1", value))]
    assert registry_record_is_authentic("master", b"ep1", value, good)
    assert not registry_record_is_authentic("other-master", b"ep1", value, good)
    assert not registry_record_is_authentic("master", b"ep2", value, good)  # moved to another key
    assert not registry_record_is_authentic("master", b"ep1", value + b"x", good)  # changed
    assert not registry_record_is_authentic("master", b"ep1", None, good)  # turned into a deletion
    assert not registry_record_is_authentic("master", b"ep1", value, None)
    assert not registry_record_is_authentic("master", b"ep1", value, good + good)  # ambiguous
    deletion = [(REGISTRY_SIGNATURE, registry_signature("master", b"ep1", None))]
    assert registry_record_is_authentic("master", b"ep1", None, deletion)
    assert not registry_record_is_authentic("master", b"ep1", b"", deletion)


def test_sealed_secrets_open_only_with_the_master_secret_for_their_endpoint() -> None:
    from consumers.dispatcher.signing import new_secret, open_secret, seal_secret

    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    sealed = seal_secret("master", "ep1", secret)
    assert secret not in sealed and sealed != seal_secret("master", "ep1", secret)  # a fresh nonce
    assert open_secret("master", "ep1", sealed) == secret
    for master, endpoint, text in [
        ("other", "ep1", sealed),  # another deployment
        ("master", "ep2", sealed),  # copied onto another endpoint
        ("master", "ep1", sealed[:-4] + "AAAA"),  # changed
        ("master", "ep1", "v1:not base64!"),
        ("master", "ep1", "plain-secret"),
    ]:
        with pytest.raises(ValueError):
            open_secret(master, endpoint, text)


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one() -> None:
    from consumers.dispatcher.registry import Endpoint

    endpoint = Endpoint("ep1", "https://x", frozenset(), True, secret="whsec_" + "A" * 32,
                        previous_secret="whsec_" + "B" * 32, previous_until_ms=2_000)  # fmt: skip
    body = b'{"type":"AlertChanged"}'
    during = sign(endpoint.signing_secrets(1_999), "msg_1", int(time.time()), body)
    Webhook(endpoint.secret).verify(body, during)
    Webhook(endpoint.previous_secret).verify(body, during)
    after = sign(endpoint.signing_secrets(2_000), "msg_1", int(time.time()), body)
    Webhook(endpoint.secret).verify(body, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.previous_secret).verify(body, after)


@given(st.binary(max_size=2000), st.text(min_size=1, max_size=40), st.integers(0, 2**33))
def test_signatures_are_the_reference_librarys_byte_for_byte(body: bytes, message_id: str, ts: int) -> None:
    from datetime import UTC, datetime

    secret = endpoint_secret("master", "ep1")
    body = body.decode("utf-8", errors="replace").encode()  # webhook bodies are JSON text
    expected = Webhook(secret).sign(message_id, datetime.fromtimestamp(ts, UTC), body.decode())
    assert sign([secret], message_id, ts, body)["webhook-signature"] == expected
