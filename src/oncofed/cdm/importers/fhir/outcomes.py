"""The outcome row of a FHIR patient, from its death and its disease status observations.

Shared by the importer and the demo FHIR writer, which checks that what it writes reads back.
"""

from __future__ import annotations


def outcome(
    dead: bool, death: int | None, statuses: list[tuple[int, bool]], days: list[int]
) -> dict[str, str | int | None]:
    """The outcome fields from the death (its day if known), the disease statuses (day,
    worsened) and every other day read.

    Dead: os = death day, event 1. Alive: os = last follow-up, event 0. Last follow-up: the
    death day, else the latest disease status, else the latest day from diagnosis on. RFS: the
    first worsened status (recurrence or progression) or death, else censored at the last
    follow-up. DMFS stays null.
    """
    seen = [day for day, _ in statuses] or [day for day in days if day >= 0]
    last = death if death is not None else max(seen)
    recurrence = min((day for day, worse in statuses if worse), default=None)
    rfs_days, rfs_event = (last, 0) if not dead else (death, None if death is None else 1)
    if recurrence is not None and (death is None or recurrence <= death):
        rfs_days, rfs_event = recurrence, 1
    return {
        "time_origin": "diagnosis",
        "vital_status": "dead" if dead else "alive",
        "last_followup_day": last,
        "os_days": death if dead else last,
        "os_event": 1 if dead else 0,
        "rfs_days": rfs_days,
        "rfs_event": rfs_event,
    }
