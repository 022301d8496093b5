"""``oncofed model``: what a downloaded model file expects and predicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import console, friendly

if TYPE_CHECKING:
    from oncofed.client.model import ModelMetadata

app = typer.Typer(help="Read a trained model file.", no_args_is_help=True)


@app.command()
@friendly
def show(
    path: Annotated[Path, typer.Argument(help="A training job's model.safetensors.")],
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Print the model's metadata as JSON.")
    ] = False,
) -> None:
    """What a model expects and predicts: its input features in order with their transforms,
    levels and pooled standardisation, the outcome, the model's type and sizes, the hash of
    its job's spec and the oncofed version that wrote it."""
    from oncofed.client.model import load_model  # scipy and the registry, on first use

    metadata = load_model(path).metadata  # the weights are checked against it too
    if as_json:
        typer.echo(json.dumps(metadata.model_dump(mode="json"), indent=2))
    else:
        console.print(render_model(metadata))


def render_model(metadata: ModelMetadata) -> RenderableType:
    """The model's description and its features' table; nothing is cut at 80 columns."""
    about = Table.grid(padding=(0, 2))
    about.add_column(no_wrap=True)
    about.add_column(overflow="fold")
    model = metadata.model
    sizes = " → ".join(map(str, metadata.layers))
    dropout = f", dropout {model.dropout:g}" if model.dropout else ""
    rows = {
        "model": f"{model.type} ({metadata.task}); layers {sizes}{dropout}",
        "outcome": _outcome(metadata),
        "predicts": "probability of the outcome"
        if metadata.task == "binary"
        else "risk score (log relative hazard; higher: earlier event)",
        "spec sha256": metadata.spec_sha256,
        "job id": metadata.job_id,
        "written by": f"oncofed {metadata.oncofed_version}",
    }
    for key, value in rows.items():
        about.add_row(key, as_text(value))
    return Group(
        Text.assemble("Model of job ", as_text(metadata.job_name, style="bold")),
        about,
        Text(
            "Features, in order (a table's columns carry these names); each number is "
            "transformed, then standardised by the pooled mean and sd:"
        ),
        _features(metadata),
    )


def _outcome(metadata: ModelMetadata) -> str:
    from oncofed.wire.spec import BinaryOutcome

    outcome = metadata.outcome
    if not isinstance(outcome, BinaryOutcome):
        return f"survival: time {outcome.time}, event {outcome.event}"
    if outcome.label is not None:
        return f"binary: {outcome.label}"
    return f"binary: {outcome.event} by day {outcome.horizon_days:g} of {outcome.time}"


def _features(metadata: ModelMetadata) -> Table:
    """One line per feature: its position, name and encoding, folded (never cut) to fit."""
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    scaling = iter(zip(metadata.standardization.mean, metadata.standardization.std, strict=True))
    for number, feature in enumerate(metadata.features, start=1):
        if feature.levels is None:
            mean, std = next(scaling)
            encoding = f"{feature.transform}; mean {mean!r}, sd {std!r}"
        else:
            first, *others = feature.levels
            encoding = f"one-hot: {first} (reference), {', '.join(others)}"
        table.add_row(str(number), as_text(feature.name), as_text(encoding))
    return table
