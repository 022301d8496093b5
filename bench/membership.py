"""Membership inference against the demo's 5-year recurrence models, with and without DP-SGD.

The attacker knows the population (GBSG2, which ships with lifelines, encoded as the demo's
job ``gbsg2-recurrence-5y`` encodes it), the training recipe, and that a model was trained
on a random half of it; the question is whether a given patient was in that half. K models
are trained per setting, each on its own random half. Each model in turn is the target and
the other K - 1 are the attacker's shadow models, trained the same way (with DP-SGD when the
target was):

- loss threshold (Yeom et al. 2018): a patient is called a member when the target's loss on
  them is below a threshold; the best threshold is taken (an upper bound on the attacker);
- LiRA (Carlini et al. 2022, online): the target's logit-scaled confidence in the patient's
  true label is compared, by likelihood ratio, with the Gaussians the shadow models that did
  and did not train on that patient give.

Scores of every target are pooled. Per setting: the attack's advantage (max TPR - FPR), its
AUC, LiRA's TPR at 1% FPR, and the models' utility (AUC on their non-members). Settings: the
demo's logistic model and an over-fitting MLP, without DP and with DP-SGD at three epsilons
(delta 1e-5, noise calibrated by ``oncofed.privacy.accounting.calibrate_dpsgd``).

``.venv/bin/python bench/membership.py [--models K] [--output FILE]``; figures are printed
and written to ``bench/results-membership.json``. docs/membership-inference.md explains them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from lifelines.datasets import load_gbsg2
from stamp import write_figures

from oncofed.demo.data import demo_specs
from oncofed.learning.data import Cohort, build_cohort, standardization
from oncofed.learning.metrics import auc
from oncofed.learning.private import dpsgd_schedule, train_private
from oncofed.learning.registry import initial_weights
from oncofed.learning.train import predict, train
from oncofed.privacy.accounting import calibrate_dpsgd
from oncofed.wire.spec import JobSpec, ModelSpec

JOB = "gbsg2-recurrence-5y"
DELTA = 1e-5
EPSILONS = (1.0, 3.0, 8.0)
DEFAULT_EPSILON = 3.0
"""The epsilon at which the test holds the attacks near chance (the middle of the three)."""
MAX_GRAD_NORM = 1.0
LOW_FPR = 0.01
PER_PATIENT_VARIANCE = 32
"""From this many models per setting, LiRA fits each patient's own variances."""
MODELS = 64
"""Models trained per setting by default (each the target once, with 63 shadow models)."""
MLP = ModelSpec(type="mlp", hidden=[64, 64])
MLP_LR, MLP_EPOCHS = 0.01, 100
"""The over-fitting variant: two hidden layers of 64, trained 100 epochs at learning rate
0.01 (the demo's batch size and optimizer); it fits its members almost exactly."""


@dataclass(frozen=True)
class Setting:
    model: str  # "logistic" (the demo's job) or "mlp" (its over-fitting variant)
    epsilon: float | None  # None: trained without DP


def settings(epsilons: Sequence[float] = EPSILONS) -> list[Setting]:
    """Both models, each without DP and with DP at every epsilon."""
    return [Setting(m, e) for m in ("logistic", "mlp") for e in (None, *epsilons)]


def gbsg2_table() -> dict[str, np.ndarray]:
    """GBSG2 (686 patients) as the demo job's table: the model's column names, values as the
    demo's mapping (``gbsg2.yaml``) gives them."""
    d = load_gbsg2()
    return {
        "age_at_diagnosis": d["age"].to_numpy(float),
        "tumour_size_mm": d["tsize"].to_numpy(float),
        "grade": d["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}).to_numpy(object),
        "nodes_positive": d["pnodes"].to_numpy(float),
        "biomarker.PR.value": d["progrec"].to_numpy(float),
        "biomarker.ER.value": d["estrec"].to_numpy(float),
        "treatment.endocrine": d["horTh"].eq("yes").to_numpy(float),
        "rfs_days": d["time"].to_numpy(float),
        "rfs_event": d["cens"].to_numpy(float),
    }


def recipe(model: str) -> tuple[JobSpec, int]:
    """The spec and epochs of a model: the demo's logistic job for as many epochs as a site
    trains in the whole job (rounds x local epochs), or the over-fitting MLP variant."""
    [job] = [spec for spec in demo_specs() if spec.name == JOB]
    if model == "logistic":
        return job, job.rounds * job.local.epochs
    local = job.local.model_copy(update={"lr": MLP_LR})
    return job.model_copy(update={"model": MLP, "local": local}), MLP_EPOCHS


@dataclass(frozen=True)
class Population:
    """The patients with a 5-year label, and their model inputs (standardised over all of
    them: the attacker knows the population, so the scaling tells nothing of membership)."""

    cohort: Cohort
    x: np.ndarray

    @property
    def signs(self) -> np.ndarray:
        """+1 for a recurrence, -1 otherwise: a logit times this is the model's logit-scaled
        confidence in the true label, log(p / (1 - p)) of the label's probability p."""
        return 2.0 * self.cohort.label - 1.0


def population(spec: JobSpec) -> Population:
    cohort = build_cohort(spec, gbsg2_table())
    return Population(cohort, cohort.design(standardization(cohort.stats())))


def halves(models: int, n: int, seed: int) -> np.ndarray:
    """(models, n) membership: each model trains on its own random half of the patients,
    drawn independently of the other models'."""
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(n) < n // 2 for _ in range(models)])


@dataclass(frozen=True)
class Trained:
    logits: np.ndarray  # (models, n): every model's logit for every patient
    noise_multiplier: float | None  # None without DP
    seconds: float


def train_models(setting: Setting, pop: Population, keep: np.ndarray, seed: int) -> Trained:
    """One model per row of ``keep``, trained on the patients it marks, with the setting's
    recipe; DP-SGD's noise is calibrated as a site calibrates it (every model has as many
    members)."""
    spec, epochs = recipe(setting.model)
    began = time.perf_counter()
    sigma = None
    if setting.epsilon is not None:
        rate, steps = dpsgd_schedule(len(pop.cohort) // 2, spec.local.batch_size, epochs)
        sigma = calibrate_dpsgd(setting.epsilon, DELTA, rate, steps)
    logits = np.empty(keep.shape)
    for k, members in enumerate(keep):
        rows = np.flatnonzero(members)
        part, x = pop.cohort.take(rows), pop.x[rows]
        start = initial_weights(spec.model, spec.n_inputs, seed + k)
        if sigma is None:
            fit = train(spec, start, x, part, seed=seed + k, epochs=epochs)
        else:
            fit = train_private(
                spec,
                start,
                x,
                part,
                seed=seed + k,
                noise_multiplier=sigma,
                max_grad_norm=MAX_GRAD_NORM,
                epochs=epochs,
            )
        logits[k] = predict(spec, fit.weights, pop.x)
    return Trained(logits, sigma, time.perf_counter() - began)


def loss_scores(confidence: np.ndarray) -> np.ndarray:
    """Yeom et al.'s score: minus the cross-entropy loss, from the logit-scaled confidence."""
    return -np.logaddexp(0.0, -confidence)


def lira_scores(confidence: np.ndarray, keep: np.ndarray, target: int) -> np.ndarray:
    """Online LiRA: for each patient, the log likelihood ratio of the target's confidence
    under the Gaussians of the shadow models (every model but the target) trained with and
    without that patient. Each patient has their own variances when there are at least
    ``PER_PATIENT_VARIANCE`` models; with fewer, one variance for in and one for out, pooled
    over the patients (as Carlini et al. 2022 recommend with few shadow models). A patient
    whom no shadow model trained on (or every one did) scores 0: no evidence either way."""
    shadows = np.arange(len(keep)) != target
    inside, values = keep[shadows], confidence[shadows]
    per_patient = len(keep) >= PER_PATIENT_VARIANCE
    observed = confidence[target]
    score = _log_density(observed, *_gaussian(values, inside, per_patient)) - _log_density(
        observed, *_gaussian(values, ~inside, per_patient)
    )
    return np.where(inside.any(axis=0) & (~inside).any(axis=0), score, 0.0)


def _gaussian(
    values: np.ndarray, group: np.ndarray, per_patient: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's mean over the models in ``group`` (a column of ``values`` each), and
    the standard deviation around it: the patient's own, or pooled over all patients."""
    count = group.sum(axis=0)
    mean = (values * group).sum(axis=0) / np.maximum(count, 1)
    squares = (values - mean) ** 2 * group
    if per_patient:
        return mean, np.sqrt(squares.sum(axis=0) / np.maximum(count, 1))
    return mean, np.full(mean.shape, np.sqrt(squares.sum() / count.sum()))


def _log_density(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Log density of N(mean, sd^2) at x, less the constant every density shares."""
    sd = np.maximum(sd, 1e-6)  # a patient whose shadow models all agree
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd)


@dataclass(frozen=True)
class Attack:
    advantage: float  # max over thresholds of TPR - FPR
    auc: float
    tpr_at_low_fpr: float  # the best TPR at an FPR of at most LOW_FPR


def attack_figures(scores: np.ndarray, member: np.ndarray) -> Attack:
    """ROC figures of calling a patient a member when their score is at least a threshold."""
    order = np.argsort(-scores, kind="stable")
    hits = member[order]
    last = np.r_[np.flatnonzero(np.diff(scores[order])), len(order) - 1]  # end of each tie
    tpr = np.r_[0.0, np.cumsum(hits)[last] / hits.sum()]
    fpr = np.r_[0.0, np.cumsum(~hits)[last] / (~hits).sum()]
    return Attack(
        advantage=float(np.max(tpr - fpr)),
        auc=auc(member.astype(np.float64), scores),
        tpr_at_low_fpr=float(tpr[fpr <= LOW_FPR].max()),
    )


def chance_advantage(keep: np.ndarray, seed: int, draws: int = 20) -> float:
    """The mean advantage of an attack that guesses (random scores) on the same patients and
    models: what 'no better than chance' measures at this sample size."""
    rng = np.random.default_rng(seed)
    member = keep.ravel()
    return float(
        np.mean([attack_figures(rng.random(member.size), member).advantage for _ in range(draws)])
    )


@dataclass(frozen=True)
class Result:
    model: str
    epsilon: float | None
    delta: float | None
    noise_multiplier: float | None
    loss: Attack
    lira: Attack
    test_auc: float  # mean over the models of the AUC on their non-members
    auc_lost: float | None  # test AUC without DP minus this (same model), None without DP
    train_seconds: float


def evaluate(setting: Setting, trained: Trained, pop: Population, keep: np.ndarray) -> Result:
    """Both attacks on every model as the target (scores pooled), and the models' utility."""
    confidence = trained.logits * pop.signs
    label = pop.cohort.label
    targets = range(len(keep))
    lira = np.concatenate([lira_scores(confidence, keep, t) for t in targets])
    member = keep.ravel()
    utility = [auc(label[~keep[t]], trained.logits[t][~keep[t]]) for t in targets]
    return Result(
        model=setting.model,
        epsilon=setting.epsilon,
        delta=None if setting.epsilon is None else DELTA,
        noise_multiplier=trained.noise_multiplier,
        loss=attack_figures(loss_scores(confidence).ravel(), member),
        lira=attack_figures(lira, member),
        test_auc=float(np.mean(utility)),
        auc_lost=None,
        train_seconds=trained.seconds,
    )


def study(models: int, seed: int, chosen: Sequence[Setting], verbose: bool = False) -> list[Result]:
    """Every chosen setting on the same splits; AUC lost is against the same model without DP
    (when that setting is among the chosen)."""
    results: list[Result] = []
    for setting in chosen:
        pop = population(recipe(setting.model)[0])
        keep = halves(models, len(pop.cohort), seed)
        results.append(evaluate(setting, train_models(setting, pop, keep, seed), pop, keep))
        if verbose:
            print(f"trained {setting} x {models} in {results[-1].train_seconds:.0f} s")
    baseline = {r.model: r.test_auc for r in results if r.epsilon is None}
    return [
        replace(r, auc_lost=baseline[r.model] - r.test_auc)
        if r.epsilon is not None and r.model in baseline
        else r
        for r in results
    ]


def table(results: Sequence[Result], chance: float) -> str:
    """The figures in 80 columns."""
    rows = [
        "                               loss threshold   LiRA                  utility",
        "model     epsilon  noise  adv    AUC      adv    AUC    TPR@1%   AUC    lost",
    ]
    for r in results:
        eps = "none" if r.epsilon is None else f"{r.epsilon:g}"
        sigma = "-" if r.noise_multiplier is None else f"{r.noise_multiplier:.2f}"
        lost = "-" if r.auc_lost is None else f"{r.auc_lost:+.3f}"
        rows.append(
            f"{r.model:<9} {eps:<7} {sigma:>6}  {r.loss.advantage:.3f}  {r.loss.auc:.3f}    "
            f"{r.lira.advantage:.3f}  {r.lira.auc:.3f}  {r.lira.tpr_at_low_fpr:.3f}    "
            f"{r.test_auc:.3f}  {lost}"
        )
    rows.append(f"chance: a guessing attack's advantage here is {chance:.3f} on average")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=MODELS, help="models per setting")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("results-membership.json")
    )
    args = parser.parse_args(argv)
    if args.models < 4:
        parser.error("--models must be at least 4 (each target needs shadow models)")
    torch.set_num_threads(1)  # tiny models: threads only contend (and other work shares the CPU)
    began = time.perf_counter()
    results = study(args.models, args.seed, settings(), verbose=True)
    n = len(population(recipe("logistic")[0]).cohort)
    chance = chance_advantage(halves(args.models, n, args.seed), args.seed)
    figures = {
        "job": JOB,
        "patients": n,
        "models_per_setting": args.models,
        "delta": DELTA,
        "max_grad_norm": MAX_GRAD_NORM,
        "default_epsilon": DEFAULT_EPSILON,
        "mlp": {"hidden": MLP.hidden, "lr": MLP_LR, "epochs": MLP_EPOCHS},
        "chance_advantage": chance,
        "results": [asdict(r) for r in results],
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_figures(args.output, figures)
    print(table(results, chance))
    print(f"{args.models} models per setting, {figures['seconds']} s; written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
