"""A patient's clinical trial: its ResearchSubject resources (linked by ``individual``, in
their ResearchStudy by ``study``) give the study entry day and the trial arm. Nothing here
excludes a patient: what cannot be read is left missing with a note."""

from __future__ import annotations

from dataclasses import dataclass

from fhir.resources.R4B.researchsubject import ResearchSubject

from oncofed.cdm.importers.fhir.codes import model_pattern
from oncofed.cdm.importers.fhir.context import PatientContext
from oncofed.cdm.importers.fhir.elements import full_date

ENTERED = frozenset(
    ("on-study", "on-study-intervention", "on-study-observation", "follow-up", "off-study")
)
"""ResearchSubject statuses (R4 research-subject-status) of a person who entered the study;
the others (candidate, potential-candidate, screening, eligible, ineligible, pending-on-study,
not-registered, withdrawn: "before registration") say the person never did."""
_ARM = model_pattern("patient", "trial_arm")
_BOTH = "patient.trial_arm, outcome.randomisation_day"


@dataclass(frozen=True)
class Entry:
    """The patient's study entry: its day (from diagnosis, day 0) and arm, each if known."""

    day: int | None = None
    arm: str | None = None


def study_entry(context: PatientContext, subjects: list[ResearchSubject]) -> Entry:
    """The entry of the one study the patient entered. Subjects of several studies, or of one
    study that disagree, leave both values missing (noted): the importer never picks one."""
    found: dict[str, set[Entry]] = {}
    for subject in subjects:
        if subject.status not in ENTERED:
            context.note(f"ResearchSubject: status {subject.status} (not entered, not read)")
            continue
        study = context.resolve(subject.study)
        key = f"#{id(study)}" if study is not None else subject.study.reference or ""
        found.setdefault(key, set()).add(Entry(_day(context, subject), _arm(context, subject)))
    if len(found) > 1:
        context.note(f"{_BOTH}: subjects of several studies (left missing)")
        return Entry()
    entries = next(iter(found.values()), {Entry()})
    if len(entries) > 1:
        context.note(f"{_BOTH}: subjects of one study that disagree (left missing)")
        return Entry()
    return entries.pop()


def _day(context: PatientContext, subject: ResearchSubject) -> int | None:
    """Days from diagnosis to ``period.start``; a missing or partial date is noted."""
    start = subject.period.start if subject.period is not None else None
    if full_date(start) is None:
        state = "partial" if start is not None else "no"
        context.note(f"outcome.randomisation_day: {state} period.start (left missing)")
        return None
    return context.day(start, None)


def _arm(context: PatientContext, subject: ResearchSubject) -> str | None:
    """``actualArm``, else ``assignedArm``; a name the model cannot hold is noted."""
    arm = subject.actualArm or subject.assignedArm
    if arm is not None and not _ARM.match(arm):
        context.note("patient.trial_arm: arm name not of the model's form (left missing)")
        return None
    return arm
