"""Enrolment: swap the operator's one-time token for this site's own credential."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from oncofed.edge.config import EdgeConfig, EdgeHome
from oncofed.edge.errors import EnrolmentError
from oncofed.privacy.secagg.identity import public_bytes
from oncofed.wire.messages import API_PREFIX, EnrolRequest, EnrolResponse, error_detail


def enrol(
    home: EdgeHome, orchestrator: str, token: str, transport: httpx.BaseTransport | None = None
) -> EdgeConfig:
    """Enrol with the orchestrator and write the edge's directory. The credential is stored
    there only (mode 600) and never printed; the orchestrator keeps only its hash. The site's
    identity key is created here and its public half registered; the orchestrator's is
    pinned."""
    url = orchestrator.rstrip("/") + API_PREFIX + "/enrol"
    try:
        request = EnrolRequest(token=token, identity_key=public_bytes(home.identity()).hex())
    except ValidationError as exc:
        raise EnrolmentError(
            "that is not an enrolment token (ofenr_...) from the operator"
        ) from exc
    try:
        with httpx.Client(transport=transport, timeout=30.0) as http:
            response = http.post(url, json=request.model_dump())
    except httpx.TransportError as exc:
        raise EnrolmentError(f"cannot reach {orchestrator}: {exc}") from exc
    if response.status_code != 200:
        raise EnrolmentError(
            f"enrolment refused (HTTP {response.status_code}): {error_detail(response.content)}"
        )
    enrolled = EnrolResponse.model_validate_json(response.content)
    config = EdgeConfig.model_validate(
        {
            "orchestrator": orchestrator,
            "site": enrolled.site,
            "orchestrator_key": enrolled.orchestrator_key,
        }
    )
    home.create(config, enrolled.credential)
    return config
