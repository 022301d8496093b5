"""Model registry, strategies, local training and metrics.

Importing this package does not import torch: the orchestrator uses the registry and the
strategies; only the edge (and the demo's baselines) import ``oncofed.learning.train``.
"""

from oncofed.learning.aggregate import EmptyAggregate, WeightedMean
from oncofed.learning.data import Cohort, DataError, build_cohort, holdout_split
from oncofed.learning.registry import TASKS, initial_weights, parameter_count, parameter_shapes
from oncofed.learning.strategies import Strategy, build_strategy

__all__ = [
    "TASKS",
    "Cohort",
    "DataError",
    "EmptyAggregate",
    "Strategy",
    "WeightedMean",
    "build_cohort",
    "build_strategy",
    "holdout_split",
    "initial_weights",
    "parameter_count",
    "parameter_shapes",
]
