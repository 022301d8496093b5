"""Secure aggregation (Bonawitz et al. 2017, CCS): the orchestrator learns only the sum over
sites of what each site sends, exactly, with dropouts tolerated up to a threshold.

A site runs one ``SecAggClient`` per round; the orchestrator ``verify_advert`` (as adverts
arrive), ``build_roster``, ``check_bundle``, ``inbox_for``, ``sign_survivors``,
``check_unmask`` and a ``MaskedSum``. Both derive the
``Layout`` of a round's numbers from the spec alone. Messages are in ``oncofed.wire.secagg``.
"""

from oncofed.privacy.secagg.aggregate import MaskedSum
from oncofed.privacy.secagg.client import Peers, Releases, SecAggClient, ShareKind
from oncofed.privacy.secagg.codec import check_masked, encode_masked, masked_shapes
from oncofed.privacy.secagg.crypto import verify_advert
from oncofed.privacy.secagg.encoding import (
    MIN_MODEL_FRACTION_BITS,
    NOISE_HEADROOM_BITS,
    magnitude_bits,
    model_fraction_bits,
)
from oncofed.privacy.secagg.errors import (
    AuthenticationError,
    EncodingError,
    IdentityError,
    ProtocolError,
    ReconstructionError,
    SecAggError,
    SumMismatch,
    ThresholdError,
)
from oncofed.privacy.secagg.identity import (
    fingerprint,
    load_identity,
    new_identity,
    public_bytes,
    save_identity,
)
from oncofed.privacy.secagg.layout import SITES, Layout, Segment, count, model, real
from oncofed.privacy.secagg.server import (
    build_roster,
    check_bundle,
    check_unmask,
    inbox_for,
    sign_survivors,
)
from oncofed.privacy.secagg.shamir import threshold_for

__all__ = [
    "MIN_MODEL_FRACTION_BITS",
    "NOISE_HEADROOM_BITS",
    "SITES",
    "AuthenticationError",
    "EncodingError",
    "IdentityError",
    "Layout",
    "MaskedSum",
    "Peers",
    "ProtocolError",
    "ReconstructionError",
    "Releases",
    "SecAggClient",
    "SecAggError",
    "Segment",
    "ShareKind",
    "SumMismatch",
    "ThresholdError",
    "build_roster",
    "check_bundle",
    "check_masked",
    "check_unmask",
    "count",
    "encode_masked",
    "fingerprint",
    "inbox_for",
    "load_identity",
    "magnitude_bits",
    "masked_shapes",
    "model",
    "model_fraction_bits",
    "new_identity",
    "public_bytes",
    "real",
    "save_identity",
    "sign_survivors",
    "threshold_for",
    "verify_advert",
]
