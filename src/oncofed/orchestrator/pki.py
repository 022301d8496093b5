"""The consortium's certificate authority, kept in the orchestrator's state directory
(``tls/``): it signs the orchestrator's server certificate and each site's client certificate.

A site's certificate is for its Ed25519 identity key (the one secure aggregation signs with):
the site sends a certificate signing request made with that key, which never leaves the
site, and a request for any other key than the one registered for the site is refused. Each
issue is recorded (``SiteCertificate``); issuing one never touches another. Revoking a site
marks its certificates revoked and rewrites the revocation list (``crl.pem``, signed by the
CA), which the serving process reads again whenever the file changes (``Revocations``).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncofed._files import FILE_MODE, private_dir, replace_file
from oncofed.audit import actor
from oncofed.orchestrator.db import AUDIT, Site, SiteCertificate, utcnow
from oncofed.orchestrator.errors import BadRequest, Conflict, Forbidden, NotFound
from oncofed.privacy.secagg.identity import fingerprint

CA_DAYS = 3653
"""The consortium CA's validity (ten years): sites pin it, so it outlives many server
certificates."""
SERVER_DAYS = 825
SITE_DAYS = 30.0
"""A site certificate's default validity; the edge renews it when a third is left."""
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
BACKDATE = timedelta(minutes=5)
"""Certificates start this long before they are issued: clocks a little behind still accept
them."""
MAX_CSR_BYTES = 8192


@dataclass(frozen=True)
class Paths:
    """The CA's files in an orchestrator state directory; private keys are mode 600."""

    root: Path

    @classmethod
    def of(cls, home: Path) -> Paths:
        return cls(home / "tls")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def ready(self) -> bool:
        """Whether the CA and a server certificate exist (``init`` makes them)."""
        return all(
            p.exists() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key)
        )


# -- files ---------------------------------------------------------------------------------

PUBLIC_MODE = 0o644
"""Certificates and the revocation list: public, readable by all."""


def _write(path: Path, data: bytes, *, private: bool, replace: bool = True) -> None:
    """Write ``path`` whole (a reader sees the old file or the new one, never a part):
    owner-only when ``private``, whatever the umask; ``replace=False`` refuses an existing
    file."""
    private_dir(path.parent)
    if not replace and path.exists():
        raise Conflict(f"{path} exists already; it is never replaced")
    replace_file(path, data, FILE_MODE if private else PUBLIC_MODE)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- the authority -------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """The consortium CA: its certificate and signing key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, paths: Paths) -> Authority:
        if not (paths.ca_cert.exists() and paths.ca_key.exists()):
            raise NotFound(
                f"no consortium CA in {paths.root}: run 'oncofed orchestrator init' first"
            )
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # written by create_ca
        return cls(cert, key)

    def builder(self, subject: x509.Name, days: float) -> x509.CertificateBuilder:
        now = utcnow()
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
        )

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.key, hashes.SHA256())


def create_ca(paths: Paths, name: str = "oncofed consortium CA") -> Authority:
    """A new consortium CA (ECDSA P-256, ten years). Never replaces one: sites pin it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(paths.ca_key, _pem_key(key), private=True, replace=False)
    _write(paths.ca_cert, _pem(cert), private=False, replace=False)
    return Authority(cert, key)


def _key_usage(*, signature: bool, agreement: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names for the hosts edges dial: IP addresses and DNS names."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise BadRequest(f"{host!r} is neither a host name nor an IP address") from None
            names.append(x509.DNSName(host.lower()))
    if not names:
        raise BadRequest("name at least one host or IP address edges dial")
    return names


def issue_server(paths: Paths, hosts: Sequence[str] = DEFAULT_HOSTS) -> x509.Certificate:
    """A new server key and certificate naming ``hosts`` (replacing any earlier one: they
    chain to the same CA, so sites need nothing new)."""
    authority = Authority.load(paths)
    names = host_names(hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = authority.sign(
        authority.builder(subject, SERVER_DAYS)
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_key_usage(signature=True, agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    _write(paths.server_key, _pem_key(key), private=True)
    _write(paths.server_cert, _pem(cert), private=False)
    return cert


def initialise(home: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> x509.Certificate:
    """The consortium CA (created when missing, else kept) and a new server certificate for
    ``hosts``; returns the CA's certificate."""
    paths = Paths.of(home)
    authority = Authority.load(paths) if paths.ca_cert.exists() else create_ca(paths)
    issue_server(paths, hosts)
    if not paths.crl.exists():
        _write(paths.crl, _crl(authority, []), private=False)
    return authority.cert


# -- site certificates ---------------------------------------------------------------------


def site_key(csr_pem: str, site: Site) -> Ed25519PublicKey:
    """The key of a site's certificate signing request, when the request is well formed,
    signed by its key, and that key is the site's registered identity key."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadRequest("that is not a PEM certificate signing request") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BadRequest("the certificate request must be for the site's Ed25519 identity key")
    if not csr.is_signature_valid:
        raise BadRequest("the certificate request's signature does not verify")
    raw = key.public_bytes_raw()
    if site.identity_key is None:
        raise Conflict(f"site {site.name!r} has no identity key on record to certify")
    if raw.hex() != site.identity_key:
        raise Forbidden(
            f"the certificate request is for key {fingerprint(raw)}, not for the identity key "
            f"of site {site.name!r} ({fingerprint(bytes.fromhex(site.identity_key))})"
        )
    return key


def issue_site(session: Session, home: Path, site: Site, csr_pem: str, days: float) -> str:
    """A client certificate (PEM) for ``site``'s identity key, valid ``days``, recorded in
    the session. CN and SAN name the site; it serves client authentication only."""
    if site.credential_hash is None:
        raise Forbidden(f"site {site.name!r} is not enrolled (or was revoked)")
    key = site_key(csr_pem, site)
    authority = Authority.load(Paths.of(home))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site.name)])
    cert = authority.sign(
        authority.builder(subject, days)
        .public_key(key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site.name)]), critical=False)
        .add_extension(_key_usage(signature=True, agreement=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    row = SiteCertificate(
        serial=f"{cert.serial_number:x}",
        site_id=site.id,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    session.add(row)
    session.flush()
    AUDIT.record(
        session,
        "certificate.issued",
        actor=actor("site", site.name),
        site=site.name,
        detail={
            "serial": row.serial,
            "sha256": row.fingerprint,
            "not_after": f"{row.not_after:%Y-%m-%dT%H:%M:%SZ}",
        },
    )
    return _pem(cert).decode()


def site_named(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"no site {name!r}")
    return site


def revoke_certificates(session: Session, home: Path, site: Site, by: str) -> list[str]:
    """Revoke every certificate issued to ``site`` (``by``: who, as the audit log names
    actors) and list them in the revocation list, which is written before the transaction
    commits (a failed commit leaves a certificate refused, never one accepted). Returns the
    serials revoked now."""
    now = utcnow()
    serials = []
    for cert in session.scalars(
        select(SiteCertificate).where(
            SiteCertificate.site_id == site.id, SiteCertificate.revoked_at.is_(None)
        )
    ):
        cert.revoked_at = now
        serials.append(cert.serial)
    session.flush()
    write_crl(session, home)
    if serials:
        AUDIT.record(
            session, "certificate.revoked", actor=by, site=site.name, detail={"serials": serials}
        )
    return serials


def write_crl(session: Session, home: Path) -> None:
    """The revocation list of every revoked certificate still unexpired, signed by the CA."""
    paths = Paths.of(home)
    rows = session.scalars(
        select(SiteCertificate).where(
            SiteCertificate.revoked_at.is_not(None), SiteCertificate.not_after > utcnow()
        )
    )
    _write(paths.crl, _crl(Authority.load(paths), list(rows)), private=False)


def _crl(authority: Authority, rows: Sequence[SiteCertificate]) -> bytes:
    now = utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now)
        .next_update(now + timedelta(days=SITE_DAYS))
    )
    for row in rows:
        assert row.revoked_at is not None  # selected so
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(row.serial, 16))
            .revocation_date(row.revoked_at)
            .build()
        )
    return builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def certificates(session: Session, site_id: int) -> list[SiteCertificate]:
    """Every certificate issued to a site, oldest first."""
    query = select(SiteCertificate).where(SiteCertificate.site_id == site_id)
    return list(session.scalars(query.order_by(SiteCertificate.issued_at)))


# -- revocation, as the serving process sees it --------------------------------------------


class Revocations:
    """The serials the revocation list at ``path`` names, read again whenever the file was
    replaced (a stat per check: a revocation takes effect on the next request, even on a
    connection opened before it). The list must verify under the CA; one that is missing or
    does not verify refuses every certificate."""

    def __init__(self, path: Path, ca: x509.Certificate) -> None:
        self.path = path
        self._ca = ca
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] | None = None

    def revoked(self, serial: int) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            return True
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            with self._lock:
                self._serials = self._read()
                self._stamp = stamp
        return self._serials is None or serial in self._serials

    def _read(self) -> frozenset[int] | None:
        try:
            crl = x509.load_pem_x509_crl(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        public = self._ca.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)  # created so
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(public):
            return None
        return frozenset(entry.serial_number for entry in crl)
