"""Enrolment: swap the operator's one-time token for this site's own credential (and, over
TLS, its client certificate)."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import ValidationError

from oncofed.audit import clip
from oncofed.edge.certificates import signing_request
from oncofed.edge.config import CONFIG, EdgeConfig, EdgeHome, pinned_context
from oncofed.edge.errors import EdgeError, EnrolmentError
from oncofed.edge.ledger import Ledger
from oncofed.privacy.secagg.identity import public_bytes
from oncofed.wire.messages import API_PREFIX, EnrolRequest, EnrolResponse, error_detail


def enrol(
    home: EdgeHome,
    orchestrator: str,
    token: str,
    ca: Path | None = None,
    transport: httpx.BaseTransport | None = None,
    replace: bool = False,
) -> EdgeConfig:
    """Enrol with the orchestrator and write the edge's directory. The credential is stored
    there only (mode 600) and never printed; the orchestrator keeps only its hash. The site's
    identity key is created here and its public half registered; the orchestrator's is
    pinned. With the consortium CA's certificate ``ca`` (required for an https URL), the
    orchestrator is verified against it alone, and a certificate signing request made with
    the identity key brings back the site's client certificate; both are kept in the edge
    directory. A directory enrolled already is refused unless ``replace``: its credential is
    then replaced (its identity key, policy, datasets and ledger are kept)."""
    if home.enrolled and not replace:
        raise EnrolmentError(
            f"{home.root} is enrolled already, as {enrolment_of(home)}: give --force to "
            "replace its credential, or another --dir"
        )
    url = orchestrator.rstrip("/") + API_PREFIX + "/enrol"
    if ca is None and orchestrator.lower().startswith("https:"):
        raise EnrolmentError(
            "give the consortium CA file the operator sent with the token (--ca FILE): "
            "the edge trusts no other authority for the orchestrator"
        )
    try:
        ca_pem = ca.read_bytes() if ca is not None else None
        key = home.identity()
        csr = signing_request(key) if ca is not None else None
        request = EnrolRequest(token=token, identity_key=public_bytes(key).hex(), csr=csr)
    except OSError as exc:
        raise EnrolmentError(f"cannot read the CA file {ca}: {exc.strerror}") from exc
    except ValidationError as exc:
        raise EnrolmentError(
            "that is not an enrolment token (ofenr_...) from the operator"
        ) from exc
    verify = pinned_context(ca) if ca is not None else True
    try:
        with httpx.Client(transport=transport, timeout=30.0, verify=verify) as http:
            response = http.post(url, json=request.model_dump(exclude_none=True))
    except httpx.TransportError as exc:
        hint = (
            f" (its certificate must chain to the CA in {ca} and name the host dialled)"
            if "CERTIFICATE_VERIFY_FAILED" in str(exc)
            else ""
        )
        raise EnrolmentError(f"cannot reach {orchestrator}: {exc}{hint}") from exc
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
    home.save_tls(ca_pem, enrolled.certificate)
    with Ledger(home.root) as ledger:
        detail = {"orchestrator": clip(orchestrator), "orchestrator_key": enrolled.orchestrator_key}
        ledger.audit(
            home.identity(), "edge.enrolled", actor="edge", site=config.site, detail=detail
        )
    return config


def enrolment_of(home: EdgeHome) -> str:
    """Whose credential an enrolled edge directory holds, for messages: ``site north of URL``,
    or that its settings cannot be read (``--force`` then repairs them)."""
    try:
        old = home.config()
    except EdgeError:
        return f"a site whose {CONFIG} cannot be read"
    return f"site {old.site} of {old.orchestrator}"
