"""The consortium CA: its certificates, a site's certificate bound to its identity key, issue
that never touches another site, renewal and revocation."""

from __future__ import annotations

import ipaddress
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from oncofed.edge.certificates import renewal_time, signing_request
from oncofed.orchestrator import identity, pki
from oncofed.orchestrator.db import Site, SiteCertificate
from oncofed.orchestrator.errors import BadRequest, Forbidden
from oncofed.orchestrator.setup import initialise, transaction


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "orchestrator"
    initialise(home)
    return home


def enrolled(home: Path, name: str) -> Ed25519PrivateKey:
    """A site enrolled with a new identity key; its key."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw().hex()
    with transaction(home) as session:
        identity.enrol(session, identity.create_site(session, name).enrolment_token, raw)
    return key


def issue(home: Path, name: str, key: Ed25519PrivateKey, days: float = 30.0) -> x509.Certificate:
    with transaction(home) as session:
        site = pki.site_named(session, name)
        pem = pki.issue_site(session, home, site, signing_request(key), days)
    return x509.load_pem_x509_certificate(pem.encode())


def ca(home: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.Paths.of(home).ca_cert.read_bytes())


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_and_server_certificate(home: Path) -> None:
    paths = pki.Paths.of(home)
    for secret in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    authority = ca(home)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = authority.not_valid_after_utc - authority.not_valid_before_utc
    assert lifetime >= timedelta(days=3650)
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(authority)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key(paths.server_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == server.public_key()


def test_a_new_server_certificate_names_the_hosts_edges_dial_and_keeps_the_ca(
    home: Path,
) -> None:
    before = ca(home)
    pki.initialise(home, ["fl.example.org", "10.0.0.5"])
    assert ca(home) == before  # sites pinned it
    server = x509.load_pem_x509_certificate(pki.Paths.of(home).server_cert.read_bytes())
    server.verify_directly_issued_by(before)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(BadRequest, match="neither a host name"):
        pki.host_names(["https://fl.example.org"])


def test_a_site_certificate_is_for_its_identity_key(home: Path) -> None:
    key = enrolled(home, "alpha")
    cert = issue(home, "alpha", key, days=30)
    cert.verify_directly_issued_by(ca(home))
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alpha"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["alpha"]
    assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # never a server's
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=10)
    with transaction(home) as session:
        [row] = session.scalars(select(SiteCertificate)).all()
        assert row.serial == f"{cert.serial_number:x}"
        assert row.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
        assert row.not_after == cert.not_valid_after_utc and row.revoked_at is None


def test_a_request_for_another_key_than_the_sites_identity_key_is_refused(home: Path) -> None:
    """Someone holding a site's enrolment token or credential but not its identity key asks
    for a certificate for their own key: the request itself is valid (a CA signing whatever
    it is sent would certify it), yet refused."""
    enrolled(home, "alpha")
    intruder = Ed25519PrivateKey.generate()
    request = signing_request(intruder)
    assert x509.load_pem_x509_csr(request.encode()).is_signature_valid
    with transaction(home) as session:
        site = pki.site_named(session, "alpha")
        with pytest.raises(Forbidden, match="not for the identity key of site 'alpha'"):
            pki.issue_site(session, home, site, request, 30)
        with pytest.raises(BadRequest, match="not a PEM certificate signing request"):
            pki.issue_site(session, home, site, "-----BEGIN CERTIFICATE REQUEST-----\nx", 30)
        assert session.scalars(select(SiteCertificate)).all() == []


def test_a_request_whose_signature_does_not_verify_is_refused(home: Path) -> None:
    """A request naming the site's key but not signed by it (its signature from another key):
    whoever sent it does not hold the identity key."""
    key = enrolled(home, "alpha")
    other = Ed25519PrivateKey.generate()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    signed = builder.sign(other, None).public_bytes(serialization.Encoding.DER)
    honest = builder.sign(key, None).public_bytes(serialization.Encoding.DER)
    # Both requests' DER: (info, algorithm, signature); put the other's signature on ours.
    forged = honest[: -len(_signature(honest))] + _signature(signed)
    pem = x509.load_der_x509_csr(forged).public_bytes(serialization.Encoding.PEM).decode()
    with transaction(home) as session:
        site = pki.site_named(session, "alpha")
        with pytest.raises(BadRequest, match="signature does not verify"):
            pki.issue_site(session, home, site, pem, 30)


def _signature(der: bytes) -> bytes:
    """An Ed25519 request's signature: its last 64 bytes."""
    return der[-64:]


def test_adding_a_site_reissues_no_one_elses_certificate(home: Path) -> None:
    alpha = issue(home, "alpha", enrolled(home, "alpha"))
    paths = pki.Paths.of(home)
    files = {p: p.read_bytes() for p in (paths.ca_cert, paths.ca_key, paths.server_cert)}
    with transaction(home) as session:
        before = [(r.serial, r.fingerprint) for r in session.scalars(select(SiteCertificate))]
    issue(home, "beta", enrolled(home, "beta"))
    assert {p: p.read_bytes() for p in files} == files
    with transaction(home) as session:
        alpha_id = pki.site_named(session, "alpha").id
        rows = pki.certificates(session, alpha_id)
        assert [(r.serial, r.fingerprint) for r in rows] == before
        assert rows[0].fingerprint == alpha.fingerprint(hashes.SHA256()).hex()
        assert len(session.scalars(select(SiteCertificate)).all()) == 2


def test_renewal_issues_a_new_certificate_for_the_same_key(home: Path) -> None:
    key = enrolled(home, "alpha")
    first = issue(home, "alpha", key, days=30)
    second = issue(home, "alpha", key, days=30)
    assert second.serial_number != first.serial_number
    assert second.public_key() == first.public_key() == key.public_key()
    due = renewal_time(first)
    assert (
        first.not_valid_after_utc - due
        == (first.not_valid_after_utc - first.not_valid_before_utc) / 3
    )
    with transaction(home) as session:
        rows = pki.certificates(session, pki.site_named(session, "alpha").id)
        assert [r.revoked_at for r in rows] == [None, None]  # the old one runs out by itself


def test_revocation_lists_every_certificate_of_the_site_and_no_other(home: Path) -> None:
    key = enrolled(home, "alpha")
    certs = [issue(home, "alpha", key), issue(home, "alpha", key)]
    beta = issue(home, "beta", enrolled(home, "beta"))
    paths = pki.Paths.of(home)
    seen = pki.Revocations(paths.crl, ca(home))
    assert not any(seen.revoked(c.serial_number) for c in [*certs, beta])
    with transaction(home) as session:
        site = identity.revoke_site(session, "alpha")
        serials = pki.revoke_certificates(session, home, site, "operator:test")
    assert sorted(serials) == sorted(f"{c.serial_number:x}" for c in certs)
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert {r.serial_number for r in crl} == {c.serial_number for c in certs}
    # The same reader sees the new list at once: a revocation needs no restart.
    assert all(seen.revoked(c.serial_number) for c in certs)
    assert not seen.revoked(beta.serial_number)
    with transaction(home) as session:
        site = session.scalars(select(Site).where(Site.name == "alpha")).one()
        with pytest.raises(Forbidden, match="revoked"):
            pki.issue_site(session, home, site, signing_request(key), 30)


def test_a_revocation_list_not_signed_by_the_ca_refuses_every_certificate(home: Path) -> None:
    """Someone who can write the state directory but not sign as the CA replaces the list with
    an empty one of their own: it does not verify, so nothing is accepted (fail closed)."""
    key = enrolled(home, "alpha")
    cert = issue(home, "alpha", key)
    paths = pki.Paths.of(home)
    seen = pki.Revocations(paths.crl, ca(home))
    assert not seen.revoked(cert.serial_number)
    impostor = pki.Authority(ca(home), ec.generate_private_key(ec.SECP256R1()))
    paths.crl.write_bytes(pki._crl(impostor, []))
    assert seen.revoked(cert.serial_number)
    paths.crl.unlink()
    assert seen.revoked(cert.serial_number)
