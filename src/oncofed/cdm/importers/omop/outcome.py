"""The duckdb SQL of the outcome table, run after ``sql`` (it reads ``origin``, ``modifier``
and ``tumour``). No endpoint is copied from another; each is set by its own records:

* overall survival: DEATH (the earliest death date: event) or, without a death record, the
  latest observation period end (last follow-up: censored); a cause concept 0 is an unknown
  cause, any other a cancer when it names a neoplasm, else another cause;
* recurrence-free survival: only for a person the source holds disease-status follow-up for,
  at least one disease episode (``concepts.DISEASE_EPISODES``: Disease First Occurrence,
  Recurrence, Progression, Remission, Stable Disease, Metastatic Disease, ...). Its event is
  the first recurrence or progression episode or death, else it is censored at the last
  follow-up. Without a disease episode, RFS is left empty (a death alone sets OS only);
* distant-metastasis-free survival: when the index tumour's M category is M0 and a disease
  episode is recorded, or when a distant metastasis after diagnosis is recorded (a metastasis
  episode or a later M1 Cancer Modifier); its event is the first such metastasis or death,
  else censored at the last follow-up. Left empty for tumours metastatic at diagnosis
  (metastases found on or before the day of diagnosis are not events).

Impossible dates (death or follow-up before diagnosis, a recurrence not after it) and death
dates or causes that disagree exclude the person (``rules``)."""

from oncofed.cdm.importers.omop.concepts import DISEASE_EPISODES

_DISEASE = ", ".join(f"'{kind}'" for kind in DISEASE_EPISODES)

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

CREATE TABLE disease AS
SELECT DISTINCT x.person_id FROM episode x JOIN meaning k ON k.concept_id = x.episode_concept_id
WHERE k.episode_kind IN ($disease);

CREATE TABLE outcome AS
SELECT o.person_id, 'diagnosis' AS time_origin,
    CASE WHEN d.person_id IS NULL THEN 'alive' ELSE 'dead' END AS vital_status,
    f.fu - o.origin AS last_followup_day,
    d.dd - o.origin AS death_day,
    r.day AS recurrence_day, ms.day AS metastasis_day,
    t.m_category AS index_m, e.person_id IS NOT NULL AS disease,
    CASE WHEN d.person_id IS NOT NULL THEN d.cause END AS cause_of_death
FROM origin o
LEFT JOIN followup f USING (person_id)
LEFT JOIN dead d USING (person_id)
LEFT JOIN recurrence r USING (person_id)
LEFT JOIN metastasis ms USING (person_id)
LEFT JOIN disease e USING (person_id)
LEFT JOIN tumour t ON t.person_id = o.person_id AND t.tumour_seq = 1;

CREATE TABLE endpoint AS
SELECT *, disease AS rfs, dmfs_m AND (disease OR metastasis_day IS NOT NULL) AS dmfs,
    death_day IS NOT NULL OR last_followup_day IS NOT NULL AS followed
FROM (
    SELECT *, list_min([recurrence_day, death_day]) AS first_rfs,
        list_min([metastasis_day, death_day]) AS first_dmfs,
        coalesce(index_m NOT LIKE 'M1%' AND (index_m LIKE 'M0%' OR metastasis_day IS NOT NULL),
                 metastasis_day IS NOT NULL) AS dmfs_m
    FROM outcome
);
""".replace("$disease", _DISEASE)
"""Work tables; ``endpoint`` has one row per person with a diagnosis: whether RFS (``rfs``) and
DMFS (``dmfs``) are set, whether DMFS would be by its M rule alone (``dmfs_m``), and whether
the person has a death or a follow-up date (``followed``)."""


SELECT_OUTCOME = """
SELECT CAST(person_id AS VARCHAR) AS patient_id, time_origin, vital_status, last_followup_day,
    CASE WHEN vital_status = 'dead' THEN death_day ELSE last_followup_day END AS os_days,
    CASE WHEN vital_status = 'dead' THEN 1 WHEN last_followup_day IS NOT NULL THEN 0 END
        AS os_event,
    CASE WHEN rfs THEN coalesce(first_rfs, last_followup_day) END AS rfs_days,
    CASE WHEN rfs AND first_rfs IS NOT NULL THEN 1
         WHEN rfs AND last_followup_day IS NOT NULL THEN 0 END AS rfs_event,
    CASE WHEN dmfs THEN coalesce(first_dmfs, last_followup_day) END AS dmfs_days,
    CASE WHEN dmfs AND first_dmfs IS NOT NULL THEN 1
         WHEN dmfs AND last_followup_day IS NOT NULL THEN 0 END AS dmfs_event,
    cause_of_death
FROM endpoint SEMI JOIN kept USING (person_id) ORDER BY person_id
"""
UNSUPPORTED = {
    "rfs": "followed AND NOT rfs",
    "dmfs": "followed AND dmfs_m AND NOT dmfs",
}
"""Per endpoint, the condition on ``endpoint`` of a person left without it for want of a
disease episode, though a death or a follow-up date is recorded."""
