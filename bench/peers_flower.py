"""The peers of ``bench/peers.py``: a plain in-process FedAvg loop (the floor) and Flower's
simulation, on a task the benchmark prepared (``--task``: an .npz of each site's standardised
training rows, the initial weights and the hyper-parameters). Prints one JSON line of results
and writes the final weights (``--out``, .npz, the tensors named as oncofed names them).

Both systems train each site with the same function as oncofed's edges do (``local_train``:
torch, SGD, seeded shuffling per site and round, BCE with logits), so only the machinery
around it differs. The floor needs torch and numpy only (the benchmark runs it with oncofed's
own interpreter); ``--system flower`` needs ``flwr[simulation]``, which only the benchmark's
separate virtual environment has (``make bench-peers`` creates it: bench/.venv-flower), as has
``--dump-data``, which writes scikit-learn's breast cancer set (shipped in the package).

``python bench/peers_flower.py --system floor|flower --task TASK.npz --out WEIGHTS.npz``
``python bench/peers_flower.py --dump-data DATA.npz``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STARTED = time.time()  # the process started (imports aside, which follow below)


@dataclass(frozen=True)
class Task:
    """What every site trains, as the benchmark wrote it."""

    sites: list[str]
    x: list[np.ndarray]  # each site's standardised training rows (float32)
    y: list[np.ndarray]  # their labels (float32 0/1)
    widths: list[int]  # inputs, hidden widths, 1
    weights: dict[str, np.ndarray]  # initial weights, "layers.{i}.weight" / "layers.{i}.bias"
    rounds: int
    epochs: int
    lr: float
    batch_size: int
    seed: int


def read_task(path: Path) -> Task:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        sites = list(meta["sites"])
        return Task(
            sites=sites,
            x=[data[f"x:{i}"] for i in range(len(sites))],
            y=[data[f"y:{i}"] for i in range(len(sites))],
            widths=list(meta["widths"]),
            weights={k[2:]: data[k] for k in data.files if k.startswith("w:")},
            rounds=int(meta["rounds"]),
            epochs=int(meta["epochs"]),
            lr=float(meta["lr"]),
            batch_size=int(meta["batch_size"]),
            seed=int(meta["seed"]),
        )


class Net(nn.Module):
    """Dense layers with ReLU between them, one score per row: oncofed's ``DenseStack``."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x).squeeze(-1)


def task_seed(seed: int, round_number: int, site: str) -> int:
    """Each site's shuffling seed in a round, as oncofed's edges derive it."""
    return zlib.crc32(f"{seed}:{round_number}:{site}".encode())


def local_train(
    task: Task, weights: Mapping[str, np.ndarray], index: int, round_number: int
) -> dict[str, np.ndarray]:
    """One site's local epochs from ``weights``: SGD over seeded shuffled batches."""
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(task_seed(task.seed, round_number, task.sites[index]))
    module = Net(task.widths)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    optimizer = torch.optim.SGD(module.parameters(), lr=task.lr)
    inputs = torch.from_numpy(task.x[index])
    label = torch.from_numpy(task.y[index])
    loss_fn = nn.BCEWithLogitsLoss()
    module.train()
    for _ in range(task.epochs):
        for batch in torch.randperm(inputs.shape[0], generator=generator).split(task.batch_size):
            loss = loss_fn(module(inputs[batch]), label[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def weighted_mean(updates: list[dict[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray]:
    total = float(sum(counts))
    return {
        name: sum(
            u[name].astype(np.float64) * (n / total) for u, n in zip(updates, counts, strict=True)
        ).astype(np.float32)
        for name in updates[0]
    }


def run_floor(task: Task) -> tuple[dict[str, np.ndarray], list[float], float]:
    """The floor: every round, each site's local epochs in turn, then the weighted mean."""
    weights = dict(task.weights)
    counts = [len(y) for y in task.y]
    began = time.time()
    ends = []
    for round_number in range(1, task.rounds + 1):
        updates = [local_train(task, weights, i, round_number) for i in range(len(task.sites))]
        weights = weighted_mean(updates, counts)
        ends.append(time.time())
    return weights, round_seconds(began, ends), began


def round_seconds(began: float, ends: list[float]) -> list[float]:
    return [b - a for a, b in zip([began, *ends[:-1]], ends, strict=True)]


def run_flower(task: Task, actors: int) -> tuple[dict[str, np.ndarray], list[float], float]:
    """Flower's simulation (Ray backend, one virtual SuperNode per site) with its FedAvg."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        index = int(context.node_config["partition-id"])
        round_number = int(msg.content["config"]["server-round"])
        start = msg.content["arrays"].to_numpy_ndarrays()
        weights = dict(zip(task.weights, start, strict=True))
        new = local_train(task, weights, index, round_number)
        content = RecordDict(
            {
                "arrays": ArrayRecord([new[k] for k in task.weights]),
                "metrics": MetricRecord({"num-examples": len(task.y[index])}),
            }
        )
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    ends: list[float] = []
    began: list[float] = []
    final: dict[str, np.ndarray] = {}

    def at_round_end(round_number: int, arrays: ArrayRecord) -> MetricRecord | None:
        (ends if round_number else began).append(time.time())
        return None

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        k = len(task.sites)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=k,
            min_available_nodes=k,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([task.weights[k] for k in task.weights]),
            num_rounds=task.rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=at_round_end,
        )
        final.update(zip(task.weights, result.arrays.to_numpy_ndarrays(), strict=True))

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=len(task.sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": actors, "include_dashboard": False},
        },
    )
    if not final or len(ends) != task.rounds:
        raise RuntimeError(f"Flower ran {len(ends)} of {task.rounds} rounds")
    return final, round_seconds(began[0], ends), began[0]


def dump_data(path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    # 1 = malignant: the outcome a cancer center would model
    np.savez(path, x=data.data.astype(np.float64), y=(data.target == 0).astype(np.int64))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["floor", "flower"])
    parser.add_argument("--task", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dump-data", type=Path)
    args = parser.parse_args(argv)
    if args.dump_data:
        dump_data(args.dump_data)
        return 0
    if not (args.system and args.task and args.out):
        parser.error("--system, --task and --out are required")
    torch.set_num_threads(1)
    imported = time.time()
    task = read_task(args.task)
    if args.system == "floor":
        weights, seconds, began = run_floor(task)
    else:
        weights, seconds, began = run_flower(task, args.actors)
    np.savez(args.out, **weights)
    result: dict[str, Any] = {
        "system": args.system,
        "started_at": STARTED,
        "imported_at": imported,
        "training_began_at": began,
        "result_at": time.time(),
        "round_seconds": seconds,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
