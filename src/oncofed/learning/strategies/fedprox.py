"""FedProx (Li et al., 2020): FedAvg on the server, a proximal term on the sites.

Each site minimises ``loss(w) + mu/2 * ||w - w_global||^2``, which keeps heterogeneous
sites from drifting far from the global model during their local epochs. The server half, and
so the bound on one round's move (``max_step``), is FedAvg's.
"""

from __future__ import annotations

from oncofed.learning.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    def __init__(self, mu: float) -> None:
        if mu < 0:
            raise ValueError("mu must be non-negative")
        self.proximal_mu = mu
