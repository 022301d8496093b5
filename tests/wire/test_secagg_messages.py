"""Secure aggregation messages: strict JSON, exact-size base64, consistent contents."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from oncofed.wire.secagg import (
    MAX_SITES,
    SEALED_BYTES,
    Inbox,
    KeyAdvert,
    Roster,
    RoundContext,
    SealedShare,
    SecureStep,
    ShareBundle,
    Survivors,
    UnmaskShares,
)

CONTEXT = {"job_id": "job-1", "round": 2, "announced": "0f" * 32}


def b64(size: int, fill: int = 1) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


def advert(site: str) -> dict[str, Any]:
    return {"site": site, "mask_key": b64(32), "share_key": b64(32, 2), "signature": b64(64)}


def roster(*sites: str, threshold: int = 2) -> dict[str, Any]:
    return {
        "adverts": [advert(site) for site in sites],
        "identities": {site: b64(32, 3) for site in sites},
        "threshold": threshold,
    }


def sealed(sender: str, recipient: str) -> dict[str, str]:
    return {"sender": sender, "recipient": recipient, "ciphertext": b64(SEALED_BYTES)}


def test_messages_round_trip_as_json_with_plain_base64() -> None:
    message = Roster.model_validate(roster("a", "b", "c"))
    text = message.model_dump_json()
    assert "\\n" not in text and '"mask_key":"AQEB' in text
    assert Roster.model_validate_json(text) == message
    assert message.adverts[0].mask_key == b"\x01" * 32
    assert message.position("c") == 3 and message.advert("b").site == "b"
    step = SecureStep(phase="shares", context=RoundContext(**CONTEXT), roster=message)
    assert SecureStep.model_validate_json(step.model_dump_json()) == step


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b64(32)[:20] + "\n" + b64(32)[20:], "expected 44 base64 characters"),
        (b64(32)[:43] + "\n", "not standard base64"),
        (b64(31), "expected 32 bytes, got 31"),
        (b64(33), "expected 32 bytes, got 33"),
        ("!" * 44, "not standard base64"),
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "not standard base64"),
        (32, "expected base64 text"),
    ],
)
def test_binary_fields_are_exact_standard_base64(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KeyAdvert.model_validate(advert("a") | {"mask_key": value})


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (KeyAdvert, advert("a") | {"extra": 1}, "Extra inputs are not permitted"),
        (KeyAdvert, advert("a/../b"), "String should match pattern"),
        (KeyAdvert, advert("a" * 65), "at most 64 characters"),
        (RoundContext, CONTEXT | {"announced": "0F" * 32}, "String should match pattern"),
        (RoundContext, CONTEXT | {"round": -1}, "greater than or equal to 0"),
        (Roster, roster("b", "a"), "adverts must be sorted by site name, each once"),
        (Roster, roster("a", "a"), "adverts must be sorted by site name, each once"),
        (Roster, roster("a", "b", threshold=3), "threshold is larger than the number of sites"),
        (Roster, roster("a", "b", threshold=1), "greater than or equal to 2"),
        (Roster, roster("a"), "at least 2 items"),
        (
            Roster,
            roster("a", "b") | {"identities": {"a": b64(32)}},
            "identities must name exactly the sites",
        ),
        (
            ShareBundle,
            {"sender": "a", "shares": [sealed("b", "c")]},
            "every share must come from the bundle's sender",
        ),
        (
            ShareBundle,
            {"sender": "a", "shares": [sealed("a", "b"), sealed("a", "b")]},
            "recipients must be other sites, each once",
        ),
        (Inbox, {"recipient": "a", "shares": [sealed("b", "c")]}, "addressed to the inbox's"),
        (Inbox, {"recipient": "a", "shares": [sealed("a", "a")]}, "senders must be other sites"),
        (SealedShare, sealed("a", "b") | {"ciphertext": b64(SEALED_BYTES + 3)}, "characters"),
        (
            Survivors,
            {"survivors": ["a", "b"], "dropped": ["b"], "signature": b64(64)},
            "cannot both survive and drop",
        ),
        (
            Survivors,
            {"survivors": ["b", "a"], "dropped": [], "signature": b64(64)},
            "survivors must be sorted",
        ),
        (
            Survivors,
            {"survivors": [], "dropped": [], "signature": b64(64)},
            "at least 1 item",
        ),
        (
            UnmaskShares,
            {"sender": "a", "self_mask": {"b": b64(66)}, "mask_key": {"b": b64(66)}},
            "both kinds of share for one site",
        ),
        (
            SecureStep,
            {"phase": "masked", "context": CONTEXT, "roster": roster("a", "b")},
            "carries exactly what its phase needs",
        ),
        (SecureStep, {"phase": "keys", "context": CONTEXT}, None),
        (SecureStep, {"phase": "reveal", "context": CONTEXT}, "Input should be 'keys'"),
    ],
)
def test_malformed_messages_are_refused(
    model: type[BaseModel], data: dict[str, Any], message: str | None
) -> None:
    if message is None:
        model.model_validate_json(json.dumps(data))
        return
    with pytest.raises(ValidationError, match=message):
        model.model_validate_json(json.dumps(data))


def test_oversized_messages_are_refused() -> None:
    sites = [f"s{i:03d}" for i in range(MAX_SITES + 1)]
    with pytest.raises(ValidationError, match=f"at most {MAX_SITES} items"):
        Roster.model_validate(roster(*sites))
    shares = {site: b64(66) for site in sites}
    with pytest.raises(ValidationError, match=f"at most {MAX_SITES} items"):
        UnmaskShares.model_validate({"sender": "a", "self_mask": shares, "mask_key": {}})
    with pytest.raises(ValidationError, match=f"at most {MAX_SITES} items"):
        Inbox.model_validate({"recipient": "a", "shares": [sealed(s, "a") for s in sites]})


def test_messages_are_immutable_once_checked() -> None:
    message = Roster.model_validate(roster("a", "b"))
    with pytest.raises(ValidationError, match="frozen"):
        message.threshold = 1  # type: ignore[misc]
