"""Reading FHIR bundle files: validation with the ``fhir.resources`` R4B models, errors that
name the file and entry, and each Patient with the resources whose subject (a ResearchSubject's
``individual``) it is."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from oncofed.cdm.errors import SourceError

BUNDLE_TYPES = ("collection", "transaction", "batch", "searchset", "document")
_CLINICAL = (
    Condition, Observation, Procedure, MedicationRequest, MedicationAdministration,
    MedicationStatement,
)  # fmt: skip
"""The resource types read as a patient's, through their ``subject``; ResearchSubject is read
through its ``individual``."""
_REFERENCED = (Patient, Medication, ResearchStudy)
"""The resource types read only where another resource references them."""


@dataclass
class Record:
    """One Patient resource with the clinical resources that name it as subject."""

    pid: str
    where: str
    patient: Patient
    index: dict[str, Resource]
    """The bundle's resources by fullUrl and ``Type/id``, for :func:`resolve`."""
    resources: list[Resource] = field(default_factory=list)


def bundle_files(source: Path) -> list[Path]:
    """``source`` itself, or the ``*.json`` files of the folder ``source`` by name."""
    if source.is_dir():
        files = sorted(source.glob("*.json"))
        if not files:
            raise SourceError(f"{source}: no *.json bundles in this folder")
        return files
    if not source.is_file():
        raise SourceError(f"{source}: no such file or folder")
    return [source]


def read_bundle(path: Path) -> Bundle:
    """The validated Bundle of ``path``; SourceError naming the file and entry otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path.name}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from exc
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        found = raw.get("resourceType") if isinstance(raw, dict) else "none, not a JSON object"
        raise SourceError(f"{path.name}: not a FHIR Bundle (resourceType {found})")
    if raw.get("type") not in BUNDLE_TYPES:
        raise SourceError(
            f"{path.name}: Bundle type {raw.get('type')!r} is not read; use one of {BUNDLE_TYPES}"
        )
    entries = raw.get("entry")
    for n, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            raise SourceError(f"{path.name}: entry {n}: not a JSON object")
        resource = entry.get("resource")
        if resource is not None and not _is_resource_type(_type_of(resource)):
            raise SourceError(
                f"{path.name}: entry {n}: {_type_of(resource)!r} is not a FHIR resource type"
            )
    try:
        return Bundle.model_validate(raw)
    except ValidationError as exc:
        raise SourceError(_validation_message(path.name, raw, exc)) from exc


def _type_of(resource: object) -> object:
    return resource.get("resourceType") if isinstance(resource, dict) else None


def _is_resource_type(name: object) -> bool:
    if not isinstance(name, str):
        return False
    try:
        return issubclass(get_fhir_model_class(name), Resource)
    except (ValueError, KeyError):
        return False


def _validation_message(name: str, raw: dict[str, Any], exc: ValidationError) -> str:
    """``bundle-17.json: entry 3 (Observation): valueQuantity.value: <reason>``."""
    errors = exc.errors()
    loc = list(errors[0]["loc"])
    where = "Bundle"
    if len(loc) > 1 and loc[0] == "entry" and isinstance(loc[1], int):
        where = f"entry {loc[1]}"
        if loc[2:3] == ["resource"]:
            where += f" ({_type_of(raw['entry'][loc[1]].get('resource'))})"
            loc = loc[3:]
        else:
            loc = loc[2:]
    element = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    reason = errors[0]["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{name}: {where}: {element or 'resource'}: {reason}{more}"


def records(name: str, bundle: Bundle, notes: Counter[str]) -> list[Record]:
    """The bundle's patients, each with the clinical resources whose subject it is."""
    index: dict[str, Resource] = {}
    entries = [(n, e.fullUrl, e.resource) for n, e in enumerate(bundle.entry or []) if e.resource]
    for _, full_url, resource in entries:
        if full_url:
            index[full_url] = resource
        if resource.id:
            index[f"{resource.get_resource_type()}/{resource.id}"] = resource
    found: dict[int, Record] = {}
    for n, full_url, resource in entries:
        if isinstance(resource, Patient):
            pid = resource.id or full_url or f"{name}#{n}"
            found[id(resource)] = Record(pid, f"{name}: entry {n} (Patient)", resource, index)
    for _, _, resource in entries:
        kind = resource.get_resource_type()
        ref: Reference | None
        if isinstance(resource, ResearchSubject):
            element, ref = "individual", resource.individual
        elif isinstance(resource, _CLINICAL):
            element, ref = "subject", resource.subject
        else:
            if not isinstance(resource, _REFERENCED):
                notes[f"{kind}: resource type not used"] += 1
            continue
        subject = resolve(ref, index)
        if subject is not None and id(subject) in found:
            found[id(subject)].resources.append(resource)
        else:
            notes[f"{kind}: {element} is not a Patient in the bundle (ignored)"] += 1
    return list(found.values())


def resolve(ref: Reference | None, index: Mapping[str, Resource]) -> Resource | None:
    """The bundle resource a reference names: by fullUrl, ``Type/id`` or a URL ending so."""
    if ref is None or not ref.reference:
        return None
    target = ref.reference.split("/_history/")[0]
    if target in index:
        return index[target]
    return index.get("/".join(target.split("/")[-2:]))
