"""The duckdb SQL of the outcome table, run after ``sql`` (it reads ``origin``, ``modifier``
and ``tumour``). No endpoint is copied from another; each is set by its own records:

* overall survival: DEATH (the earliest death date: event) or, without a death record, the
  latest observation period end (last follow-up: censored); a cause concept 0 is an unknown
  cause, any other a cancer when it names a neoplasm, else another cause;
* recurrence-free survival: only for a person whose disease status was assessed after
  diagnosis, at least one disease-status episode (``concepts.STATUS_EPISODES``: Recurrence,
  Progression, Metastatic Disease, Remission, Stable Disease, a Disease Dynamic or Extent
  concept) starting after day 0. A Disease First Occurrence or another episode of the disease
  is no such evidence: oncology ETLs write one for every diagnosis. The event is the first
  recurrence or progression episode, distant metastasis after diagnosis (a distant recurrence:
  as for DMFS below) or death, else it is censored at the last assessment, the
  latest day a status episode covers (its end date, else its start date). Without a status
  episode after diagnosis, RFS is left empty (a death alone sets OS only);
* distant-metastasis-free survival: when a distant metastasis after diagnosis is recorded (a
  metastasis episode or a later M1 Cancer Modifier), or when the index tumour's M category is
  M0 and a disease-status episode after day 0 is recorded; its event is the first such
  metastasis or death, else censored at the last assessment. Left empty for tumours
  metastatic at diagnosis (metastases found on or before the day of diagnosis are not events).

Impossible dates (death or follow-up before diagnosis, a recurrence not after it) and death
dates or causes that disagree exclude the person (``rules``)."""

from oncofed.cdm.importers.omop.concepts import STATUS_EPISODES

_STATUS = ", ".join(f"'{kind}'" for kind in STATUS_EPISODES)

OUTCOME_TABLES = """
CREATE TABLE followup AS
SELECT person_id, max(observation_period_end_date) AS fu FROM observation_period GROUP BY ALL;

CREATE TABLE dead AS
SELECT x.person_id, min(x.death_date) AS dd, count(DISTINCT x.death_date) AS dates,
    coalesce(min(c.cause), 'unknown') AS cause, count(DISTINCT c.cause) AS causes,
    bool_or(x.cause_concept_id <> 0 AND c.cause IS NULL) AS unread_cause
FROM death x LEFT JOIN (
    SELECT concept_id, CASE WHEN neoplasm = 'yes' THEN 'cancer' ELSE 'other' END AS cause
    FROM meaning WHERE concept_id <> 0) c ON c.concept_id = x.cause_concept_id
GROUP BY ALL;

CREATE TABLE recurrence AS
SELECT x.person_id, min(x.episode_start_date - o.origin) AS day
FROM episode x JOIN meaning k ON k.concept_id = x.episode_concept_id
JOIN origin o USING (person_id)
WHERE k.episode_kind = 'recurrence' GROUP BY ALL;

CREATE TABLE metastasis AS
SELECT person_id, min(day) AS day FROM (
    SELECT m.person_id, m.d - o.origin AS day FROM modifier m JOIN origin o USING (person_id)
    WHERE m.item = 'm' AND m.value LIKE 'M1%'
    UNION ALL
    SELECT x.person_id, x.episode_start_date - o.origin FROM episode x
    JOIN meaning k ON k.concept_id = x.episode_concept_id JOIN origin o USING (person_id)
    WHERE k.episode_kind = 'metastasis'
) WHERE day > 0 GROUP BY ALL;

CREATE TABLE assessed AS
SELECT x.person_id,
    max(coalesce(x.episode_end_date, x.episode_start_date) - o.origin) AS day
FROM episode x JOIN meaning k ON k.concept_id = x.episode_concept_id
JOIN origin o USING (person_id)
WHERE k.episode_kind IN ($status) AND x.episode_start_date > o.origin GROUP BY ALL;

CREATE TABLE outcome AS
SELECT o.person_id, 'diagnosis' AS time_origin,
    CASE WHEN d.person_id IS NULL THEN 'alive' ELSE 'dead' END AS vital_status,
    f.fu - o.origin AS last_followup_day,
    d.dd - o.origin AS death_day,
    r.day AS recurrence_day, ms.day AS metastasis_day,
    t.m_category AS index_m, a.day AS assessed_day,
    CASE WHEN d.person_id IS NOT NULL THEN d.cause END AS cause_of_death
FROM origin o
LEFT JOIN followup f USING (person_id)
LEFT JOIN dead d USING (person_id)
LEFT JOIN recurrence r USING (person_id)
LEFT JOIN metastasis ms USING (person_id)
LEFT JOIN assessed a USING (person_id)
LEFT JOIN tumour t ON t.person_id = o.person_id AND t.tumour_seq = 1;

CREATE TABLE endpoint AS
SELECT *, assessed_day IS NOT NULL AS rfs,
    dmfs_m AND (assessed_day IS NOT NULL OR metastasis_day IS NOT NULL) AS dmfs,
    death_day IS NOT NULL OR last_followup_day IS NOT NULL AS followed
FROM (
    SELECT *, list_min([recurrence_day, metastasis_day, death_day]) AS first_rfs,
        list_min([metastasis_day, death_day]) AS first_dmfs,
        coalesce(index_m NOT LIKE 'M1%' AND (index_m LIKE 'M0%' OR metastasis_day IS NOT NULL),
                 metastasis_day IS NOT NULL) AS dmfs_m
    FROM outcome
);
""".replace("$status", _STATUS)
"""Work tables; ``endpoint`` has one row per person with a diagnosis: whether RFS (``rfs``) and
DMFS (``dmfs``) are set, whether DMFS would be by its M rule alone (``dmfs_m``), and whether
the person has a death or a follow-up date (``followed``)."""


SELECT_OUTCOME = """
SELECT CAST(person_id AS VARCHAR) AS patient_id, time_origin, vital_status, last_followup_day,
    CASE WHEN vital_status = 'dead' THEN death_day ELSE last_followup_day END AS os_days,
    CASE WHEN vital_status = 'dead' THEN 1 WHEN last_followup_day IS NOT NULL THEN 0 END
        AS os_event,
    CASE WHEN rfs THEN coalesce(first_rfs, assessed_day) END AS rfs_days,
    CASE WHEN rfs THEN CAST(first_rfs IS NOT NULL AS INTEGER) END AS rfs_event,
    CASE WHEN dmfs THEN coalesce(first_dmfs, assessed_day) END AS dmfs_days,
    CASE WHEN dmfs THEN CAST(first_dmfs IS NOT NULL AS INTEGER) END AS dmfs_event,
    cause_of_death
FROM endpoint SEMI JOIN kept USING (person_id) ORDER BY person_id
"""
UNSUPPORTED = {
    "rfs": "followed AND NOT rfs",
    "dmfs": "followed AND dmfs_m AND NOT dmfs",
}
"""Per endpoint, the condition on ``endpoint`` of a person left without it for want of a
disease-status episode after diagnosis, though a death or a follow-up date is recorded."""
