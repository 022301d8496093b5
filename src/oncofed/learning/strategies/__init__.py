"""Aggregation strategies, one per module behind ``Strategy``."""

from oncofed.learning.strategies.base import StepBound, Strategy, apply_strategy
from oncofed.learning.strategies.fedadam import FedAdam
from oncofed.learning.strategies.fedavg import FedAvg
from oncofed.learning.strategies.fedprox import FedProx
from oncofed.wire.spec import FedAdamSpec, FedAvgSpec, FedProxSpec, StrategySpec


def build_strategy(spec: StrategySpec) -> Strategy:
    """The strategy a job spec names, with its options."""
    match spec:
        case FedAvgSpec():
            return FedAvg()
        case FedProxSpec(mu=mu):
            return FedProx(mu)
        case FedAdamSpec():
            return FedAdam(spec.lr, spec.beta1, spec.beta2, spec.tau)
    raise ValueError(f"unknown strategy {spec!r}")


__all__ = [
    "FedAdam",
    "FedAvg",
    "FedProx",
    "StepBound",
    "Strategy",
    "apply_strategy",
    "build_strategy",
]
