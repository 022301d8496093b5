"""The site's client certificate: requested for its identity key (which never leaves the
site), and renewed before it expires."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.edge.config import EdgeHome
from oncofed.edge.errors import EdgeError

RENEW_WHEN_LEFT = 1 / 3
"""The edge asks for a new certificate when less than this part of its validity is left."""


def signing_request(key: Ed25519PrivateKey) -> str:
    """A certificate signing request (PEM) for ``key``, signed with it. The orchestrator
    names the site in the certificate itself, so the request names nobody."""
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, None)
    return request.public_bytes(serialization.Encoding.PEM).decode()


def current(home: EdgeHome) -> x509.Certificate | None:
    """The site's certificate, if it has one."""
    try:
        return x509.load_pem_x509_certificate(home.certificate_file.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EdgeError(f"{home.certificate_file} does not hold a PEM certificate") from exc


def renewal_time(cert: x509.Certificate) -> datetime:
    """When less than a third of ``cert``'s validity is left."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - lifetime * RENEW_WHEN_LEFT


def fingerprint_lines(cert: x509.Certificate) -> list[str]:
    """The SHA-256 fingerprint of ``cert`` as ``openssl x509 -noout -fingerprint -sha256``
    prints it, in two lines of 16 bytes (to fit 80 columns), for people to compare."""
    colon = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return ["SHA-256 fingerprint:", "  " + colon[:47], "  " + colon[48:]]
