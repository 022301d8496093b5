"""A patient's Observations: tumour staging, grade, size, nodes and performance status (the
earliest of each kind, for the tumour the observation is about), tumour markers and disease
statuses."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation

from oncofed.cdm import fields
from oncofed.cdm.importers.fhir.codes import (
    AJCC,
    DISEASE_STATUS,
    DISEASE_STATUS_LOINC,
    GRADE_LOINC,
    GRADES,
    LOINC,
    NODES_LOINC,
    PERFORMANCE,
    RESULTS,
    SIZE_LOINC,
    SIZE_MAX_DIMENSION,
    SIZE_UNITS,
    STAGE_SYSTEMS,
    TNM_FIELDS,
    TNM_LOINC,
    ajcc_category,
    ajcc_stage_group,
    model_pattern,
)
from oncofed.cdm.importers.fhir.context import PatientContext, Row
from oncofed.cdm.importers.fhir.elements import (
    code_in,
    codings,
    concepts,
    effective,
    lookup,
    unit,
    whole,
)

_UNIT = model_pattern("biomarker", "unit")
_Found = dict[tuple[int, str, str], list[tuple[tuple[bool, int], Any]]]
"""(tumour number, field, stage basis) -> ((undated, day), value) of each observation."""


class ObservationReader:
    """Reads the Observations of one patient whose primary cancers are known."""

    def __init__(self, context: PatientContext, tumour_of: dict[int, int]) -> None:
        """``tumour_of``: ``id()`` of each primary cancer Condition -> its tumour number."""
        self.context, self.tumour_of = context, tumour_of
        self.found: _Found = {}
        self.biomarkers: list[Row] = []
        self.statuses: list[tuple[int, bool]] = []
        """(day, worsened) of each disease status."""

    def read(self, obs: Observation) -> None:
        for system, code in codings(obs.code):
            if system == LOINC and self._read_loinc(obs, code):
                return
        self.context.note("Observation: code not used by the model")

    def finish(self, number: int, tumour: Row) -> None:
        """Fills the tumour row ``number`` with the earliest value of each kind; pathological
        staging if any, else clinical."""

        def pick(name: str, basis: str = "") -> object:
            found = sorted(self.found.get((number, name, basis), []), key=lambda item: item[0])
            if len({value for _, value in found}) > 1:
                self.context.note(f"tumour.{name}: observations differ, the earliest used")
            return found[0][1] if found else None

        for name in ("grade", "tumour_size_mm", "nodes_positive", "nodes_examined"):
            tumour[name] = pick(name)
        tumour["ecog"], tumour["karnofsky"] = pick("ecog"), pick("karnofsky")
        for basis in ("pathological", "clinical"):
            staging = {name: pick(name, basis) for name in TNM_FIELDS}
            if any(value is not None for value in staging.values()):
                tumour.update(staging, stage_basis=basis, stage_system=pick("stage_system", basis))
                return

    def _read_loinc(self, obs: Observation, code: str) -> bool:
        if code in TNM_LOINC:
            self._staging(obs, *TNM_LOINC[code])
        elif code in fields.BIOMARKER_BY_LOINC:
            self._biomarker(obs, code)
        elif code == DISEASE_STATUS_LOINC:
            self._disease_status(obs)
        elif code in GRADE_LOINC:
            grade = lookup(concepts(obs.valueCodeableConcept), GRADES)
            self._keep(obs, "grade", grade, "code not mapped")
        elif code in SIZE_LOINC:
            self._size(obs)
        elif code in NODES_LOINC:
            self._whole_number(obs, NODES_LOINC[code], whole(obs))
        elif code in PERFORMANCE:
            name, answers = PERFORMANCE[code]
            value = whole(obs)
            if value is None and obs.valueCodeableConcept is not None:
                value = answers.get(code_in(obs.valueCodeableConcept, (LOINC,)) or "")
            self._whole_number(obs, name, value)
        else:
            return False
        return True

    def _keep(
        self, obs: Observation, name: str, value: object, problem: str, basis: str = ""
    ) -> None:
        """Keep ``value`` for the tumour ``obs`` is about: its focus, or the only one."""
        if value is None:
            self.context.note(f"tumour.{name}: {problem}")
            return
        targets = [self.context.resolve(ref) for ref in obs.focus or []]
        tumour = next((self.tumour_of[id(t)] for t in targets if id(t) in self.tumour_of), None)
        other_condition = any(isinstance(target, Condition) for target in targets)
        if tumour is None and len(self.tumour_of) == 1 and not other_condition:
            tumour = 0
        if tumour is None:
            self.context.note(f"tumour.{name}: not linked to one primary cancer (focus)")
            return
        day = self.context.day(effective(obs), f"tumour.{name}")
        self.found.setdefault((tumour, name, basis), []).append(((day is None, day or 0), value))

    def _staging(self, obs: Observation, name: str, basis: str) -> None:
        code = code_in(obs.valueCodeableConcept, (AJCC,))
        if code is None:
            value = None
        elif name == "stage_group":
            value = ajcc_stage_group(code)
        else:
            value = ajcc_category(code, basis, fields.field("tumour", name).values or ())
        self._keep(obs, name, value, "code not mapped", basis)
        if value is not None and obs.method is not None:
            system = lookup([obs.method], STAGE_SYSTEMS)
            self._keep(obs, "stage_system", system, "method not mapped", basis)

    def _size(self, obs: Observation) -> None:
        quantity = obs.valueQuantity
        for component in obs.component or []:
            if (LOINC, SIZE_MAX_DIMENSION) in codings(component.code):
                quantity = component.valueQuantity
        factor = SIZE_UNITS.get(unit(quantity) or "") if quantity is not None else None
        size = None
        if quantity is not None and quantity.value is not None and factor is not None:
            size = float(quantity.value * factor)
        self._keep(obs, "tumour_size_mm", size, "no size in mm or cm")

    def _whole_number(self, obs: Observation, name: str, value: int | None) -> None:
        spec = fields.field("tumour", name)
        low, high = spec.minimum or 0, spec.maximum or 0
        in_range = value if value is not None and low <= value <= high else None
        self._keep(obs, name, in_range, "no whole number in range")

    def _biomarker(self, obs: Observation, loinc: str) -> None:
        answers = [*concepts(obs.valueCodeableConcept), *(obs.interpretation or [])]
        result = lookup(answers, RESULTS)
        if result is None and answers:
            self.context.note("biomarker.result: code not mapped")
        row: Row = {fields.KEY: self.context.pid, "code": loinc, "result": result or "unknown"}
        quantity = obs.valueQuantity
        if quantity is not None and quantity.value is not None:
            ucum = unit(quantity)
            if ucum is not None and _UNIT.match(ucum):
                row["value"], row["unit"] = float(quantity.value), ucum
            else:
                self.context.note("biomarker.value: no UCUM unit")
        row["day"] = self.context.day(effective(obs), "biomarker.day")
        self.biomarkers.append(row)

    def _disease_status(self, obs: Observation) -> None:
        day = self.context.day(effective(obs), "outcome: disease status")
        if day is None or day < 0:
            self.context.note("outcome: disease status without a date from diagnosis on (ignored)")
            return
        worsened = lookup(concepts(obs.valueCodeableConcept), DISEASE_STATUS)
        if worsened is None:
            self.context.note("outcome.rfs_event: disease status code not mapped")
        self.statuses.append((day, bool(worsened)))
