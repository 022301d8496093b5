"""Aggregation strategies, one per module behind ``Strategy`` (``RobustStrategy`` for those
that need every site's update at once)."""

from oncofed.learning.strategies.base import RobustStrategy, StepBound, Strategy, apply_strategy
from oncofed.learning.strategies.fedadam import FedAdam
from oncofed.learning.strategies.fedavg import FedAvg
from oncofed.learning.strategies.fedprox import FedProx
from oncofed.learning.strategies.krum import Krum
from oncofed.learning.strategies.median import Median
from oncofed.learning.strategies.trimmed_mean import TrimmedMean
from oncofed.wire.spec import (
    FedAdamSpec,
    FedAvgSpec,
    FedProxSpec,
    KrumSpec,
    MedianSpec,
    StrategySpec,
    TrimmedMeanSpec,
)


def build_strategy(spec: StrategySpec) -> Strategy:
    """The strategy a job spec names, with its options."""
    match spec:
        case FedAvgSpec():
            return FedAvg()
        case FedProxSpec(mu=mu):
            return FedProx(mu)
        case FedAdamSpec():
            return FedAdam(spec.lr, spec.beta1, spec.beta2, spec.tau)
        case MedianSpec():
            return Median()
        case TrimmedMeanSpec(trim=trim):
            return TrimmedMean(trim)
        case KrumSpec(byzantine=byzantine, multi=multi):
            return Krum(byzantine, multi)
    raise ValueError(f"unknown strategy {spec!r}")


__all__ = [
    "FedAdam",
    "FedAvg",
    "FedProx",
    "Krum",
    "Median",
    "RobustStrategy",
    "StepBound",
    "Strategy",
    "TrimmedMean",
    "apply_strategy",
    "build_strategy",
]
