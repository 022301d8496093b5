"""A patient's cancer treatments: surgery and radiotherapy Procedures, and Medication
Requests, Administrations and Statements whose drug is a cancer treatment."""

from __future__ import annotations

from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.procedure import Procedure

from oncofed.cdm import fields
from oncofed.cdm.importers.fhir.codes import (
    CANCER_MEDICATION_PROFILES,
    DRUGS,
    INTENT_EXTENSIONS,
    INTENTS,
    RADIOTHERAPY_CODES,
    RADIOTHERAPY_PROFILES,
    RXNORM,
    SNOMED,
    SURGERY_CATEGORY,
    SURGERY_PROFILES,
    model_pattern,
)
from oncofed.cdm.importers.fhir.context import NOT_INTERPRETABLE, PatientContext, Row
from oncofed.cdm.importers.fhir.elements import code_in, codings, extension, period, profiles

Medications = MedicationRequest | MedicationAdministration | MedicationStatement
TREATMENTS = (Procedure, MedicationRequest, MedicationAdministration, MedicationStatement)
"""The resource types :func:`treatment` reads."""
_AGENT = model_pattern("treatment", "agent_code")
_AGENT_FIELD = "treatment.agent_code"


def treatment(context: PatientContext, resource: Procedure | Medications) -> Row | None:
    """The treatment row of ``resource``; None (noted) when it is not a cancer treatment, and
    None for an administration of a request in the bundle (the request is the row)."""
    if isinstance(resource, Procedure):
        return _procedure(context, resource)
    return _medication(context, resource)


def _procedure(context: PatientContext, procedure: Procedure) -> Row | None:
    found = (*codings(procedure.category), *codings(procedure.code))
    snomed = {code for system, code in found if system == SNOMED}
    claimed = profiles(procedure)
    if snomed & set(RADIOTHERAPY_CODES) or claimed & set(RADIOTHERAPY_PROFILES):
        kind = "radiotherapy"
    elif SURGERY_CATEGORY in snomed or claimed & set(SURGERY_PROFILES):
        kind = "surgery"
    else:
        context.note("Procedure: not a cancer surgery or radiotherapy (ignored)")
        return None
    when = procedure.performedDateTime
    start, end = (when, when) if when is not None else period(procedure.performedPeriod)
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
    rxnorm = code_in(concept, (RXNORM,))
    kind = DRUGS.get(rxnorm or "")
    if kind is None:
        flagged = profiles(resource) & set(CANCER_MEDICATION_PROFILES)
        if not flagged and extension(resource.extension, INTENT_EXTENSIONS) is None:
            context.note(f"{resource.get_resource_type()}: not a cancer drug (ignored)")
            return None
        if rxnorm is not None and _agent(rxnorm) is None:
            context.reject(_AGENT_FIELD, NOT_INTERPRETABLE)
        context.note("treatment.type: drug not in the RxNorm map, type other")
        kind = "other"
    if isinstance(resource, MedicationRequest):
        timing = resource.dosageInstruction[0].timing if resource.dosageInstruction else None
        start, end = period(timing.repeat.boundsPeriod if timing and timing.repeat else None)
    else:
        when = resource.effectiveDateTime
        start, end = (when, when) if when is not None else period(resource.effectivePeriod)
    return _row(context, resource, kind, rxnorm, start, end)


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
