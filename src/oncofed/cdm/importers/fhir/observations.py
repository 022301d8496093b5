"""A patient's Observations: tumour staging, grade, size, nodes and performance status (for the
tumour the observation is about; several observations of one kind must agree), tumour markers
and disease statuses."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    ajcc_value,
    model_pattern,
)
from oncofed.cdm.importers.fhir.context import PatientContext, Row
from oncofed.cdm.importers.fhir.elements import codings, effective, unit, value_type

_UNIT = model_pattern("biomarker", "unit")
_CODED = ("valueCodeableConcept",)
_COUNTED = ("valueInteger", "valueQuantity")
_Found = dict[tuple[int, str, str], list[object]]
"""(tumour number, field, stage basis) -> the value of each observation."""
Read = Callable[[Observation, str], object]
"""Reads the value of an observation for the model field named by its second argument."""


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
        """Fills the tumour row ``number`` with the value of each kind; pathological staging if
        any, else clinical. Values of one kind that differ exclude the patient (each kind is
        still read)."""

        def pick(name: str, basis: str = "") -> object:
            found = self.found.get((number, name, basis), [])
            return self.context.attempt(lambda: self.context.agree(found, f"tumour.{name}"))

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
            self._keep(obs, "grade", self._grade)
        elif code in SIZE_LOINC:
            self._keep(obs, "tumour_size_mm", self._size)
        elif code in NODES_LOINC:
            self._keep(obs, NODES_LOINC[code], lambda obs, what: self._count(obs, what, {}))
        elif code in PERFORMANCE:
            name, answers = PERFORMANCE[code]
            self._keep(obs, name, lambda obs, what: self._count(obs, what, answers))
        else:
            return False
        return True

    def _keep(self, obs: Observation, name: str, read: Read, basis: str = "") -> int | None:
        """Keep the value ``read`` gives for the tumour ``obs`` is about, its focus or the only
        one; that tumour's number. An observation about another condition or without a value
        is noted and left out; one whose tumour is not clear excludes the patient."""
        what = f"tumour.{name}"
        targets = [self.context.resolve(ref) for ref in obs.focus or []]
        tumour = next((self.tumour_of[id(t)] for t in targets if id(t) in self.tumour_of), None)
        if tumour is None and any(isinstance(target, Condition) for target in targets):
            self.context.note(f"{what}: about a condition that is not a primary cancer (ignored)")
            return None
        value = read(obs, what)
        if value is None:
            self.context.note(f"{what}: observation without a value (ignored)")
            return None
        if tumour is None and len(self.tumour_of) == 1:
            tumour = 0
        if tumour is None:
            self.context.reject(what, "not linked to one primary cancer")
        self.context.day(effective(obs), None)
        self.found.setdefault((tumour, name, basis), []).append(value)
        return tumour

    def _value(self, obs: Observation, what: str, types: tuple[str, ...]) -> None:
        """Excludes the patient when ``obs`` has a value[x] of a type other than ``types``."""
        kind = value_type(obs)
        if kind is not None and kind not in types:
            self.context.reject(what, "value type not supported")

    def _staging(self, obs: Observation, name: str, basis: str) -> None:
        def read(obs: Observation, what: str) -> str | None:
            self._value(obs, what, _CODED)
            return self.context.parse(
                obs.valueCodeableConcept, what, (AJCC,), lambda key: ajcc_value(name, basis, key[1])
            )

        tumour = self._keep(obs, name, read, basis)
        if tumour is not None:
            system = self.context.code(obs.method, "tumour.stage_system", STAGE_SYSTEMS)
            if system is not None:
                self.found.setdefault((tumour, "stage_system", basis), []).append(system)

    def _grade(self, obs: Observation, what: str) -> str | None:
        self._value(obs, what, _CODED)
        return self.context.code(obs.valueCodeableConcept, what, GRADES)

    def _size(self, obs: Observation, what: str) -> float | None:
        """Millimetres from the value or its largest-dimension component, in mm or cm."""
        self._value(obs, what, ("valueQuantity",))
        quantity = obs.valueQuantity
        for component in obs.component or []:
            if (LOINC, SIZE_MAX_DIMENSION) in codings(component.code):
                quantity = component.valueQuantity
        if quantity is None or (number := self.context.number(quantity, what)) is None:
            return None
        factor = SIZE_UNITS.get(unit(quantity) or "")
        if factor is None:
            self.context.reject(what, "unit not supported")
        return float(number * factor)

    def _count(self, obs: Observation, what: str, answers: Mapping[str, int]) -> int | None:
        """A whole number in the field's range: valueInteger, valueQuantity or (with
        ``answers``, LOINC answer code -> number) valueCodeableConcept."""
        self._value(obs, what, (*_COUNTED, *(_CODED if answers else ())))
        value: int | None
        if obs.valueCodeableConcept is not None:
            value = self.context.parse(
                obs.valueCodeableConcept, what, (LOINC,), lambda key: answers.get(key[1])
            )
        elif obs.valueInteger is not None:
            value = int(obs.valueInteger)
        else:
            number = self.context.number(obs.valueQuantity, what)
            if number is not None and number != int(number):
                self.context.reject(what, "not a whole number")
            value = None if number is None else int(number)
        spec = fields.field("tumour", what.removeprefix("tumour."))
        low, high = spec.minimum or 0, spec.maximum or 0
        if value is not None and not low <= value <= high:
            self.context.reject(what, f"outside {low:g}-{high:g}")
        return value

    def _biomarker(self, obs: Observation, loinc: str) -> None:
        """A marker row: the result its value and interpretations agree on (``unknown``
        without one), its value in a UCUM unit and its day."""
        self._value(obs, "biomarker.result", (*_CODED, "valueQuantity"))
        answers = (obs.valueCodeableConcept, *(obs.interpretation or []))
        results = [self.context.code(answer, "biomarker.result", RESULTS) for answer in answers]
        result = self.context.agree(results, "biomarker.result")
        row: Row = {fields.KEY: self.context.pid, "code": loinc, "result": result or "unknown"}
        quantity = obs.valueQuantity
        number = self.context.number(quantity, "biomarker.value")
        if quantity is not None and number is not None:
            ucum = unit(quantity)
            if ucum is None or not _UNIT.match(ucum):
                self.context.reject("biomarker.unit", "unit not supported")
            row["value"], row["unit"] = float(number), ucum
        row["day"] = self.context.day(effective(obs), "biomarker.day")
        self.biomarkers.append(row)

    def _disease_status(self, obs: Observation) -> None:
        """A follow-up (day, worsened). A worsened status is a recurrence: it needs a date from
        diagnosis on; another status without one is noted and left out."""
        self._value(obs, "outcome.rfs_event", _CODED)
        worsened = self.context.code(obs.valueCodeableConcept, "outcome.rfs_event", DISEASE_STATUS)
        if worsened is None:
            self.context.note("outcome: disease status without a value (ignored)")
            return
        what = "outcome.rfs_days" if worsened else "outcome.last_followup_day"
        day = self.context.day(effective(obs), what)
        if day is None or day < 0:
            if worsened:
                self.context.reject(what, "no date" if day is None else "before diagnosis")
            self.context.note("outcome: disease status without a date from diagnosis on (ignored)")
            return
        self.statuses.append((day, worsened))
