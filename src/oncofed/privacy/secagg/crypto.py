"""The protocol's uses of the ``cryptography`` primitives, with their errors translated.

Everything signed, derived or sealed is bound to the round by ``canonical`` bytes: each part
prefixed by its length, so no two different tuples give the same bytes. Key adverts and
sealed shares are bound to the job and round (they may be made before the round opens); pair
masks and survivor lists, to what the round announced as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oncofed.privacy.secagg.errors import AuthenticationError
from oncofed.privacy.secagg.identity import fingerprint
from oncofed.wire.secagg import NONCE_BYTES, KeyAdvert, RoundContext, RoundId, Survivors

DOMAIN = b"oncofed secagg v1"
SEED_BYTES = 32


def canonical(*parts: bytes) -> bytes:
    """``len(p1) || p1 || len(p2) || p2 ...`` with 4-byte big-endian lengths."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _names(sites: Sequence[str]) -> bytes:
    return canonical(*(site.encode() for site in sites))


def round_bytes(round_id: RoundId) -> bytes:
    """(domain, job, round): what adverts and sealed shares are bound to."""
    return canonical(DOMAIN, round_id.job_id.encode(), round_id.round.to_bytes(8, "big"))


def context_bytes(context: RoundContext) -> bytes:
    """(domain, job, round, announced hash): what masks and survivor lists are bound to."""
    return canonical(round_bytes(context), bytes.fromhex(context.announced))


def advert_payload(round_id: RoundId, site: str, mask_key: bytes, share_key: bytes) -> bytes:
    return canonical(b"advert", round_bytes(round_id), site.encode(), mask_key, share_key)


def survivors_payload(
    context: RoundContext, survivors: Sequence[str], dropped: Sequence[str]
) -> bytes:
    return canonical(b"survivors", context_bytes(context), _names(survivors), _names(dropped))


def _verify(identity: bytes, signature: bytes, payload: bytes, refusal: str) -> None:
    """Check an Ed25519 signature; ``refusal`` is the error's message when it does not hold."""
    try:
        Ed25519PublicKey.from_public_bytes(identity).verify(signature, payload)
    except (InvalidSignature, ValueError) as exc:
        raise AuthenticationError(refusal) from exc


def verify_advert(round_id: RoundId, advert: KeyAdvert, identity: bytes) -> None:
    """``AuthenticationError`` unless ``identity`` signed ``advert`` for this very round."""
    payload = advert_payload(round_id, advert.site, advert.mask_key, advert.share_key)
    _verify(
        identity,
        advert.signature,
        payload,
        f"the key advert of site {advert.site!r} does not verify with its identity key "
        f"({fingerprint(identity)}): it was forged, its keys substituted, or it was made for "
        "another job or round",
    )


def check_usable(advert: KeyAdvert) -> None:
    """``AuthenticationError`` unless both keys of ``advert`` are usable X25519 keys (a
    low-order point would break every round). The orchestrator checks each advert it takes;
    a site needs no probe, as its own agreement with a key refuses it the same way."""
    probe = X25519PrivateKey.generate()
    for key in (advert.mask_key, advert.share_key):
        agree(probe, key, advert.site)


def verify_survivors(context: RoundContext, survivors: Survivors, orchestrator_key: bytes) -> None:
    """``AuthenticationError`` unless the orchestrator signed this survivor list for this round."""
    payload = survivors_payload(context, survivors.survivors, survivors.dropped)
    _verify(
        orchestrator_key,
        survivors.signature,
        payload,
        "the survivor list is not signed by the orchestrator's key "
        f"({fingerprint(orchestrator_key)}) for this round: it was forged or altered; no "
        "shares are released",
    )


def agree(private: X25519PrivateKey, public: bytes, peer: str) -> bytes:
    """X25519 shared secret with ``peer``'s public key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise AuthenticationError(
            f"site {peer!r} published an invalid X25519 key; the round cannot use it"
        ) from exc


def _derive(purpose: bytes, bound: bytes, a: str, b: str, secret: bytes) -> bytes:
    low, high = sorted((a, b))
    info = canonical(purpose, bound, low.encode(), high.encode())
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(secret)


def pair_seed(context: RoundContext, a: str, b: str, secret: bytes) -> bytes:
    """s_ab = HKDF-SHA256(X25519(mask_sk_a, mask_pk_b), info = context || sorted(a, b))."""
    return _derive(b"pair mask", context_bytes(context), a, b, secret)


def pair_sign(site: str, peer: str) -> int:
    """+1 when ``site`` sorts before ``peer``, else -1: the pair's masks cancel in the sum."""
    return 1 if site < peer else -1


def share_key(round_id: RoundId, a: str, b: str, secret: bytes) -> bytes:
    """The ChaCha20-Poly1305 key of shares between a and b, from their share keys' secret."""
    return _derive(b"share box", round_bytes(round_id), a, b, secret)


def _aad(round_id: RoundId, sender: str, recipient: str) -> bytes:
    return canonical(b"shares", round_bytes(round_id), sender.encode(), recipient.encode())


def seal(key: bytes, round_id: RoundId, sender: str, recipient: str, plain: bytes) -> bytes:
    """``nonce || ChaCha20-Poly1305(plain)`` with a random 96-bit nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, _aad(round_id, sender, recipient))


def unseal(key: bytes, round_id: RoundId, sender: str, recipient: str, box: bytes) -> bytes:
    nonce, body = box[:NONCE_BYTES], box[NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, _aad(round_id, sender, recipient))
    except InvalidTag as exc:
        raise AuthenticationError(
            f"the shares from site {sender!r} do not open: they were tampered with, or sealed "
            "for another site or round; this site will not go on with the round"
        ) from exc
