"""The layout of every kind of secure round, derived from the spec alone: the orchestrator and
each site derive the same one, and no site's data can change its shape.

Analyses' layouts are imported when first asked for: they bring scipy, which an orchestrator
that only trains never needs in its memory."""

from __future__ import annotations

from oncofed.learning import secure as learning
from oncofed.privacy.secagg import Layout, model_fraction_bits
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.spec import JobSpec


def update_fraction_bits(spec: JobSpec, sites: int) -> int:
    """The narrow ring's scale for the job's model updates with ``sites`` sites in a round;
    ``EncodingError`` when no safe encoding exists (the job is refused at submission)."""
    return model_fraction_bits(sites, learning.MAX_SITE_ROWS, spec.local.clip_norm)


def round_layout(spec: JobSpec | AnalysisSpec, kind: str, number: int, sites: int) -> Layout:
    """What each site of a secure round of ``kind`` and ``number`` sends, with ``sites`` in
    its roster."""
    if isinstance(spec, AnalysisSpec):
        from oncofed.analytics.secure import secure_layout

        return secure_layout(spec)
    if kind == "stats":
        return learning.stats_layout(spec)
    if kind == "train":
        bits = update_fraction_bits(spec, sites)
        return learning.update_layout(spec, bits, spec.evaluation.scores(number))
    if kind == "evaluate":
        return learning.evaluation_layout(spec)
    raise ValueError(f"no secure layout for a {kind!r} round of a training job")
