"""The outcome row of a FHIR patient, from its death, its disease status observations and its
study entry.

Shared by the importer and the demo FHIR writer, which checks that what it writes reads back.
"""

from __future__ import annotations


def outcome(
    dead: bool,
    death: int | None,
    statuses: list[tuple[int, bool]],
    days: list[int],
    entry: int | None = None,
) -> dict[str, str | int | None]:
    """The outcome fields from the death (its day if known), the disease statuses (day,
    worsened), every other day read and the day of study entry. An endpoint the records give no
    evidence for is missing, never copied from another.

    OS (Patient.deceased[x]): dead, the death day and event 1 (the day missing without a death
    date); alive, censored at the last follow-up. Last follow-up: the death day, else the latest
    disease status or study entry, else the latest day from diagnosis on. RFS only for a patient
    with a disease status, the evidence that recurrence was assessed: the first worsened status
    (recurrence or progression) or death, else censored at the latest status; without one, RFS
    is missing. DMFS is missing: no record read says a distant metastasis was looked for.
    """
    assessed = [day for day, _ in statuses]
    entered = [entry] if entry is not None and entry >= 0 else []
    seen = [*assessed, *entered] if assessed else [day for day in days if day >= 0]
    last = death if death is not None else max(seen)
    rfs_days: int | None = None
    rfs_event: int | None = None
    recurrence = min((day for day, worse in statuses if worse), default=None)
    if recurrence is not None and (death is None or recurrence <= death):
        rfs_days, rfs_event = recurrence, 1
    elif assessed and dead:
        rfs_days, rfs_event = death, None if death is None else 1
    elif assessed:
        rfs_days, rfs_event = max(assessed), 0
    return {
        "time_origin": "diagnosis",
        "randomisation_day": entry,
        "vital_status": "dead" if dead else "alive",
        "last_followup_day": last,
        "os_days": death if dead else last,
        "os_event": 1 if dead else 0,
        "rfs_days": rfs_days,
        "rfs_event": rfs_event,
    }
