"""An in-process secure round: sites with identity keys, pinned peers and a release ledger,
and an honest orchestrator. Tests run it whole or step by step, changing one thing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.privacy.secagg import (
    SITES,
    Layout,
    MaskedSum,
    SecAggClient,
    ShareKind,
    build_roster,
    check_bundle,
    count,
    encode_masked,
    inbox_for,
    model,
    new_identity,
    public_bytes,
    real,
    sign_survivors,
)
from oncofed.wire.secagg import (
    ClearPart,
    MaskedHeader,
    Roster,
    RoundContext,
    RoundId,
    ShareBundle,
    Survivors,
)

CONTEXT = RoundContext(job_id="job-1", round=3, announced="ab" * 32)
FRACTION_BITS = 40
LAYOUT: Layout = {
    SITES: count(),
    "events": count(2, 3),
    "gradient": real(4),
    "weight": model((3, 5), FRACTION_BITS),
    "bias": model((5,), FRACTION_BITS),
}


class Refused(Exception):
    """What the edge raises when it refuses a key or a release."""


@dataclass
class PinnedPeers:
    """Trust on first use, as the edge's ledger does."""

    keys: dict[str, bytes] = field(default_factory=dict)

    def pin(self, keys: Mapping[str, bytes]) -> None:
        changed = [site for site, key in keys.items() if self.keys.get(site, key) != key]
        if changed:
            raise Refused(f"identity key of {', '.join(changed)} changed")
        self.keys |= keys


@dataclass
class ReleaseLedger:
    released: dict[tuple[str, int, str], ShareKind] = field(default_factory=dict)

    def record(self, job_id: str, round: int, releases: Mapping[str, ShareKind]) -> None:
        wanted = {(job_id, round, peer): kind for peer, kind in releases.items()}
        both = [key[2] for key, kind in wanted.items() if self.released.get(key, kind) != kind]
        if both:
            raise Refused(f"both kinds of share for {', '.join(both)}")
        self.released |= wanted


def site_names(n: int) -> list[str]:
    return [f"site-{i:02d}" for i in range(n)]


def site_values(rng: np.random.Generator, layout: Layout = LAYOUT) -> dict[str, np.ndarray]:
    """Counts, reals of mixed magnitude and float32 model values for every segment."""
    values: dict[str, np.ndarray] = {}
    for name, segment in layout.items():
        if name == SITES:
            values[name] = np.array(1)
        elif segment.fraction_bits == 0:
            values[name] = rng.integers(0, 1000, size=segment.shape)
        elif segment.limbs == 1:
            values[name] = rng.uniform(-1, 1, size=segment.shape).astype(np.float32)
        else:
            scale = 10.0 ** rng.integers(-6, 7, size=segment.shape)
            values[name] = rng.normal(size=segment.shape) * scale
    return values


@dataclass
class Round:
    """Sites and an orchestrator for one round; every step is a method, so a test can stop,
    skip a site or tamper with a message between them."""

    sites: list[str]
    layout: Layout = field(default_factory=lambda: dict(LAYOUT))
    context: RoundContext = CONTEXT
    fraction: float = 2 / 3
    min_sites: int = 3
    identities: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    orchestrator: Ed25519PrivateKey = field(default_factory=new_identity)
    ledgers: dict[str, ReleaseLedger] = field(default_factory=dict)
    clients: dict[str, SecAggClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for site in self.sites:
            self.identities.setdefault(site, new_identity())
            self.ledgers.setdefault(site, ReleaseLedger())
            self.clients[site] = self.client(site, self.context)

    def client(
        self, site: str, round_id: RoundId, peers: PinnedPeers | None = None
    ) -> SecAggClient:
        return SecAggClient(
            round_id,
            site,
            self.identities[site],
            peers=peers or PinnedPeers(),
            releases=self.ledgers[site],
            min_sites=self.min_sites,
            min_fraction=0.5,
        )

    @property
    def registered(self) -> dict[str, bytes]:
        return {site: public_bytes(key) for site, key in self.identities.items()}

    def roster(self) -> Roster:
        adverts = [client.advertise() for client in self.clients.values()]
        return build_roster(self.context, adverts, self.registered, self.fraction)

    def bundles(self, roster: Roster, sites: Iterable[str]) -> list[ShareBundle]:
        bundles = [self.clients[site].share(roster) for site in sites]
        for bundle in bundles:
            check_bundle(roster, bundle)
        return bundles

    def masked(
        self, bundles: list[ShareBundle], values: Mapping[str, Mapping[str, np.ndarray]]
    ) -> MaskedSum:
        """The sum of the masked inputs of the sites in ``values`` (each from its own inbox)."""
        total = MaskedSum(self.context, self.layout)
        for site, own in values.items():
            masked = self.clients[site].mask(inbox_for(site, bundles), own, self.layout)
            header = masked_header(self.context, site)
            total.add(encode_masked(masked, self.layout, header))
        return total

    def survivors(self, roster: Roster, bundles: list[ShareBundle], total: MaskedSum) -> Survivors:
        shared = [bundle.sender for bundle in bundles]
        return sign_survivors(self.context, roster, self.orchestrator, shared, total.sites)

    def run(
        self,
        values: Mapping[str, Mapping[str, np.ndarray]],
        *,
        silent: Iterable[str] = (),
    ) -> dict[str, np.ndarray]:
        """A whole round: every site shares keys, the sites in ``values`` send masked input,
        all of those but the ``silent`` ones send unmask shares."""
        roster = self.roster()
        bundles = self.bundles(roster, self.sites)
        total = self.masked(bundles, values)
        survivors = self.survivors(roster, bundles, total)
        orchestrator_key = public_bytes(self.orchestrator)
        replies = [
            self.clients[site].unmask(survivors, orchestrator_key)
            for site in survivors.survivors
            if site not in set(silent)
        ]
        return total.unmask(roster, survivors, replies)


def masked_header(context: RoundContext, site: str) -> MaskedHeader:
    """A masked input's header, with the default small-cell threshold in the clear."""
    return MaskedHeader(context=context, site=site, clear=ClearPart(threshold=11))
