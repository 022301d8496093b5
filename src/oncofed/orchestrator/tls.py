"""Serving over TLS from the consortium CA, and knowing which certificate a request came with.

Uvicorn does not tell an application which client certificate a connection presented, so
``TlsHttpToolsProtocol`` (uvicorn's httptools protocol, chosen with its ``http`` option) reads
it from the connection's SSL object once, after the handshake, and gives every request on the
connection the ASGI TLS extension (``scope["extensions"]["tls"]``: ``client_cert_chain``,
``client_cert_name``, ``tls_version``). The server asks for a client certificate without
requiring one (researchers have a bearer token and the CA pin only); the handshake verifies
any certificate offered against the consortium CA, and ``require_site_certificate`` checks,
on every request of an edge, that it names the authenticated site, is unexpired and is not
revoked (the revocation list is read again whenever it changes, so a revocation stops even a
connection opened before it).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Request
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oncofed.orchestrator.db import utcnow
from oncofed.orchestrator.errors import Forbidden, NotFound, Unauthorized
from oncofed.orchestrator.pki import Paths, Revocations

TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
"""The ASGI TLS extension's ``tls_version``: the protocol's number on the wire."""


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, adding the ASGI TLS extension to every request's scope
    of a TLS connection."""

    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:  # called after the handshake: the peer is known
            self._tls = _extension(ssl_object)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": dict(self._tls)}


def _extension(ssl_object: ssl.SSLObject) -> dict[object, object]:
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": _peer(chain[0]).subject if chain else None,
        "client_cert_error": None,  # the handshake refuses a certificate that does not verify
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python's ssl names the suite, it does not give its number
    }


@dataclass(frozen=True)
class Peer:
    """What the checks need of a client certificate."""

    subject: str
    site: str | None  # its common name
    serial: int
    not_after: datetime


@functools.lru_cache(maxsize=4096)
def _peer(pem: str) -> Peer:
    """A client certificate, parsed once however many connections present it."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Peer(
        cert.subject.rfc4514_string(),
        str(names[0].value) if names else None,
        cert.serial_number,
        cert.not_valid_after_utc,
    )


def server_context(paths: Paths) -> ssl.SSLContext:
    """TLS 1.2 or later with the server certificate; a client certificate is asked for and,
    when offered, must chain to the consortium CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.server_cert, paths.server_key)
    context.load_verify_locations(cafile=paths.ca_cert)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def mutual_tls(app: Starlette, home: Path) -> dict[str, Any]:
    """Uvicorn's options to serve ``app`` over TLS with the CA in ``home``; from then on the
    app's edge routes require the site's client certificate (``require_site_certificate``)."""
    paths = Paths.of(home)
    if not paths.ready():
        raise NotFound(
            f"no TLS certificates in {paths.root}: run 'oncofed orchestrator certificate "
            f"--dir {home}' to create them (or serve plain HTTP on loopback: --plain-http)"
        )
    context = server_context(paths)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    app.state.revocations = Revocations(paths.crl, ca)
    return {"http": TlsHttpToolsProtocol, "ssl_context_factory": lambda *_: context}


def serves_mutual_tls(app: Starlette) -> bool:
    """Whether ``app`` is served over TLS by ``mutual_tls``'s options."""
    return getattr(app.state, "revocations", None) is not None


def require_site_certificate(request: Request, site: str) -> None:
    """When the app serves mutual TLS, the request's client certificate must be ``site``'s,
    unexpired and not revoked (its chain to the CA was verified in the handshake). Served
    plain (on loopback, or ``--insecure`` behind a proxy), there is none to check."""
    if not serves_mutual_tls(request.app):
        return
    revocations: Revocations = request.app.state.revocations
    tls = request.scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if tls else None
    if not chain:
        raise Unauthorized(
            "this orchestrator requires the site's client certificate (mutual TLS): run the "
            "edge with the certificate it received at enrolment"
        )
    peer = _peer(chain[0])
    if peer.site != site:
        raise Forbidden(f"the client certificate is not site {site!r}'s")
    if peer.not_after <= utcnow():
        raise Unauthorized(
            f"the site's certificate expired at {peer.not_after:%Y-%m-%d %H:%M} UTC: "
            "the site is enrolled again"
        )
    if revocations.revoked(peer.serial):
        raise Unauthorized(f"the site's certificate (serial {peer.serial:x}) was revoked")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine: ``localhost`` or a loopback
    address (any other name counts as reachable from elsewhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
