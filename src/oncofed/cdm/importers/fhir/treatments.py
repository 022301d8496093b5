"""A patient's treatments: surgery and radiotherapy Procedures, Medication Requests,
Administrations and Statements whose drug is a cancer treatment, and the other procedures and
medications the source records that the importer does not classify as cancer treatment
(``other_procedure``, ``other_medication``), kept with their code and days when the model can
hold them."""

from __future__ import annotations

from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.procedure import Procedure

from oncofed.cdm import fields
from oncofed.cdm.importers.fhir.codes import (
    CANCER_MEDICATION_PROFILES,
    CANCER_SURGERY,
    INTENT_EXTENSIONS,
    INTENTS,
    RADIOTHERAPY_CODES,
    RADIOTHERAPY_PROFILES,
    RXNORM,
    SNOMED,
    SURGERY_CATEGORY,
    SURGERY_PROFILES,
    drug,
    model_pattern,
)
from oncofed.cdm.importers.fhir.context import NOT_INTERPRETABLE, PatientContext, Row
from oncofed.cdm.importers.fhir.elements import (
    code_in,
    codings,
    extension,
    period,
    profiles,
)

Medications = MedicationRequest | MedicationAdministration | MedicationStatement
TREATMENTS = (Procedure, MedicationRequest, MedicationAdministration, MedicationStatement)
"""The resource types :func:`treatment` reads."""
_AGENT = model_pattern("treatment", "agent_code")
_AGENT_FIELD = "treatment.agent_code"
_START = fields.field("treatment", "start_day")
_LOWEST, _HIGHEST = int(_START.minimum or 0), int(_START.maximum or 0)


def treatment(context: PatientContext, resource: Procedure | Medications) -> Row | None:
    """The treatment row of ``resource``; None for an administration of a request in the
    bundle (the request is the row) and for another procedure or medication the model cannot
    hold (noted)."""
    if isinstance(resource, Procedure):
        return _procedure(context, resource)
    return _medication(context, resource)


def _procedure(context: PatientContext, procedure: Procedure) -> Row | None:
    found = (*codings(procedure.category), *codings(procedure.code))
    snomed = {code for system, code in found if system == SNOMED}
    claimed = profiles(procedure)
    when = procedure.performedDateTime
    start, end = (when, when) if when is not None else period(procedure.performedPeriod)
    if snomed & set(RADIOTHERAPY_CODES) or claimed & set(RADIOTHERAPY_PROFILES):
        kind = "radiotherapy"
    elif SURGERY_CATEGORY in snomed or claimed & set(SURGERY_PROFILES) or snomed & CANCER_SURGERY:
        kind = "surgery"
    else:
        code = code_in(procedure.code, (SNOMED,))
        return _other(context, procedure, "other_procedure", "a SNOMED CT", code, (start, end))
    agent = context.parse(procedure.code, _AGENT_FIELD, (SNOMED,), lambda key: _agent(key[1]))
    return _row(context, procedure, kind, agent, start, end)


def _medication(context: PatientContext, resource: Medications) -> Row | None:
    if isinstance(resource, MedicationAdministration) and isinstance(
        context.resolve(resource.request), MedicationRequest
    ):
        return None
    concept = resource.medicationCodeableConcept
    medication = context.resolve(resource.medicationReference)
    if concept is None and isinstance(medication, Medication):
        concept = medication.code
    drugs = [code for system, code in codings(concept) if system == RXNORM]
    typed = next((found for code in drugs if (found := drug(code)) is not None), None)
    rxnorm, kind = typed or (drugs[0] if drugs else None, None)
    if isinstance(resource, MedicationRequest):
        timing = resource.dosageInstruction[0].timing if resource.dosageInstruction else None
        start, end = period(timing.repeat.boundsPeriod if timing and timing.repeat else None)
    else:
        when = resource.effectiveDateTime
        start, end = (when, when) if when is not None else period(resource.effectivePeriod)
    if kind is None:
        flagged = profiles(resource) & set(CANCER_MEDICATION_PROFILES)
        if not flagged and extension(resource.extension, INTENT_EXTENSIONS) is None:
            return _other(context, resource, "other_medication", "an RxNorm", rxnorm, (start, end))
        if rxnorm is not None and _agent(rxnorm) is None:
            context.reject(_AGENT_FIELD, NOT_INTERPRETABLE)
        context.note("treatment.type: drug not in the RxNorm map, type other")
        kind = "other"
    return _row(context, resource, kind, rxnorm, start, end)


def _other(
    context: PatientContext,
    resource: Procedure | Medications,
    kind: str,
    system: str,
    code: str | None,
    dates: tuple[object, object],
) -> Row | None:
    """A procedure or medication the importer does not classify as cancer treatment, as a
    ``kind`` row with its code and days. One the model cannot hold is dropped and noted by kind
    and reason, never excluding the patient: without a code of the model's form from its system
    (``system``: ``a SNOMED CT`` or ``an RxNorm``, as the note says it), without a full start
    date (the row would say nothing the model can use) or with a partial end date, with a day
    outside the model's range or with its end before its start. Its days are not counted
    towards the last follow-up (a medication's period may be planned)."""
    start, end = (context.offset(date) for date in dates)
    if code is None or _agent(code) is None:
        problem = f"without {system} code"
    elif start is None:
        problem = "without a full start date"
    elif end is None and dates[1] is not None:
        problem = "without a full end date"
    elif any(not _LOWEST <= day <= _HIGHEST for day in (start, end) if day is not None):
        problem = f"with a day outside {_LOWEST} to {_HIGHEST}"
    elif end is not None and end < start:
        problem = "with its end before its start"
    else:
        return {
            fields.KEY: context.pid,
            "type": kind,
            "agent_code": code,
            "start_day": start,
            "end_day": end,
        }
    context.note(f"{resource.get_resource_type()}: {kind} {problem} (dropped)")
    return None


def _row(
    context: PatientContext,
    resource: Procedure | Medications,
    kind: str,
    agent: str | None,
    start: object,
    end: object,
) -> Row:
    row: Row = {fields.KEY: context.pid, "type": kind, "agent_code": agent}
    row["start_day"] = context.day(start, "treatment.start_day")
    row["end_day"] = context.day(end, "treatment.end_day")
    intent = context.extension_concept(
        extension(resource.extension, INTENT_EXTENSIONS), "treatment.intent"
    )
    row["intent"] = context.parse(
        intent, "treatment.intent", (SNOMED,), lambda key: INTENTS.get(key[1])
    )
    return row


def _agent(code: str) -> str | None:
    """``code`` when it has the form of the model's agent_code."""
    return code if _AGENT.match(code) else None
