"""The duckdb SQL of the outcome table, run after ``sql`` (it reads ``origin``, ``modifier``
and ``tumour``): follow-up ends at the latest observation period; death from DEATH (a cause
concept 0 is an unknown cause, any other concept a cancer when it names a neoplasm, else
another cause); recurrence and progression from episodes; RFS and DMFS events are the first
such event or death. DMFS is computed only when the index tumour's M category (M0) or a later
distant metastasis is recorded, and left null for tumours metastatic at diagnosis (metastases
found on or before the day of diagnosis are not events). Impossible dates (death or follow-up
before diagnosis, a recurrence not after it) and death dates or causes that disagree exclude
the person (``rules``)."""

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

CREATE TABLE outcome AS
SELECT o.person_id, 'diagnosis' AS time_origin,
    CASE WHEN d.person_id IS NULL THEN 'alive' ELSE 'dead' END AS vital_status,
    f.fu - o.origin AS last_followup_day,
    d.dd - o.origin AS death_day,
    r.day AS recurrence_day, ms.day AS metastasis_day,
    t.m_category AS index_m,
    CASE WHEN d.person_id IS NOT NULL THEN d.cause END AS cause_of_death
FROM origin o
LEFT JOIN followup f USING (person_id)
LEFT JOIN dead d USING (person_id)
LEFT JOIN recurrence r USING (person_id)
LEFT JOIN metastasis ms USING (person_id)
LEFT JOIN tumour t ON t.person_id = o.person_id AND t.tumour_seq = 1;
"""


SELECT_OUTCOME = """
SELECT CAST(person_id AS VARCHAR) AS patient_id, time_origin, vital_status, last_followup_day,
    CASE WHEN vital_status = 'dead' THEN death_day ELSE last_followup_day END AS os_days,
    CASE WHEN vital_status = 'dead' THEN 1 WHEN last_followup_day IS NOT NULL THEN 0 END
        AS os_event,
    coalesce(first_rfs, last_followup_day) AS rfs_days,
    CASE WHEN first_rfs IS NOT NULL THEN 1 WHEN last_followup_day IS NOT NULL THEN 0 END
        AS rfs_event,
    CASE WHEN dmfs THEN coalesce(first_dmfs, last_followup_day) END AS dmfs_days,
    CASE WHEN dmfs AND first_dmfs IS NOT NULL THEN 1
         WHEN dmfs AND last_followup_day IS NOT NULL THEN 0 END AS dmfs_event,
    cause_of_death
FROM (
    SELECT *, list_min([recurrence_day, death_day]) AS first_rfs,
        list_min([metastasis_day, death_day]) AS first_dmfs,
        coalesce(index_m NOT LIKE 'M1%' AND (index_m LIKE 'M0%' OR metastasis_day IS NOT NULL),
                 metastasis_day IS NOT NULL) AS dmfs
    FROM outcome SEMI JOIN kept USING (person_id)
) ORDER BY person_id
"""
