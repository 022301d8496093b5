"""The duckdb SQL that turns the loaded OMOP tables into the model's patient, tumour, biomarker
and treatment tables. It joins ``meaning`` (one row per concept, see ``concepts``) and
``srcval`` (ICD-O-3 source values); ``TUMOUR_TABLES`` then ``TREATMENT_TABLES`` create the work
tables and each ``SELECT_*`` query reads one model table from them.

* Primary cancer: a condition whose concept or source concept is a primary cancer (see
  ``concepts``), or whose ``condition_source_value`` has the ICDO3 form. Conditions of one
  person in the same three-character site (or ICD-10 category) are one tumour, diagnosed at the
  earliest date; tumours are numbered by that date. Values that disagree within a tumour are
  left null.
* Time origin: the diagnosis date of the first tumour. Persons with no primary cancer are
  excluded (counted in ``notes``).
* Cancer modifiers: measurements linked to a cancer condition by ``measurement_event_id`` and
  the ``condition_occurrence.condition_occurrence_id`` field concept. Stage items of one basis
  only: pathological when any, else clinical, else without basis; per item the earliest
  measurement.
* Treatments: each surgery, radiotherapy or regimen episode is one treatment; drug exposures
  and procedures of a known kind that no episode links are joined into eras
  (``ERA_GAP_DAYS``); the intent comes from a measurement linked to the event or episode.
"""

from __future__ import annotations

from oncofed.cdm.fields import AGE_CAP

ERA_GAP_DAYS = 30
"""Drug exposures of one agent (and radiotherapy sessions) less than this many days apart are
one treatment, as OMOP's drug_era persistence window."""

TUMOUR_TABLES = """
CREATE TABLE cond AS
SELECT co.person_id, co.condition_occurrence_id AS cond_id, co.condition_start_date AS d,
    coalesce(a.icd10, b.icd10) AS icd10,
    coalesce(a.histology, b.histology, s.histology) AS histology,
    coalesce(a.site, b.site, s.site, a.icd10_site, b.icd10_site) AS site,
    coalesce(a.malignant, false) OR coalesce(b.malignant, false)
        OR coalesce(s.malignant, false) AS malignant
FROM condition_occurrence co
LEFT JOIN meaning a ON a.concept_id = co.condition_concept_id
LEFT JOIN meaning b ON b.concept_id = co.condition_source_concept_id
LEFT JOIN srcval s ON s.source_value = co.condition_source_value;

CREATE TABLE cancer AS
SELECT *, coalesce(substr(site, 1, 3), substr(icd10, 1, 3), 'H' || histology,
                   'ID' || cond_id) AS grp
FROM cond WHERE malignant AND d IS NOT NULL AND person_id IN (SELECT person_id FROM person);

CREATE TABLE tumour_grp AS
SELECT person_id, grp, min(d) AS d0,
    CASE WHEN count(DISTINCT icd10) = 1 THEN min(icd10) END AS icd10,
    CASE WHEN count(DISTINCT histology) = 1 THEN min(histology) END AS histology,
    CASE WHEN count(DISTINCT site) = 1 THEN min(site) END AS primary_site,
    (count(DISTINCT icd10) > 1)::INT + (count(DISTINCT histology) > 1)::INT
        + (count(DISTINCT site) > 1)::INT AS conflicts
FROM cancer GROUP BY person_id, grp;

CREATE TABLE origin AS
SELECT person_id, min(d0) AS origin FROM tumour_grp GROUP BY person_id;

CREATE TABLE modifier AS
SELECT c.person_id, c.grp, m.measurement_date AS d, mm.item, mm.basis, mm.system, mm.label,
    m.measurement_concept_id AS concept_id,
    CASE WHEN mm.item IN ('t', 'n', 'm', 'stage', 'grade') THEN mm.item_value END AS value,
    CASE WHEN mm.item = 'size' AND u.ucum = 'mm' THEN m.value_as_number
         WHEN mm.item = 'size' AND u.ucum = 'cm' THEN m.value_as_number * 10
         WHEN mm.item IN ('nodes_positive', 'nodes_examined') AND m.value_as_number >= 0
              AND m.value_as_number = floor(m.value_as_number) THEN m.value_as_number
    END AS num
FROM measurement m
JOIN meaning f ON f.concept_id = m.meas_event_field_concept_id
    AND f.field = 'condition_occurrence'
JOIN cancer c ON c.cond_id = m.measurement_event_id AND c.person_id = m.person_id
LEFT JOIN meaning mm ON mm.concept_id = m.measurement_concept_id
LEFT JOIN meaning u ON u.concept_id = m.unit_concept_id;

CREATE TABLE staging_basis AS
SELECT person_id, grp,
    CASE WHEN bool_or(basis = 'pathological') THEN 'pathological'
         WHEN bool_or(basis = 'clinical') THEN 'clinical' END AS basis
FROM modifier WHERE item IN ('t', 'n', 'm', 'stage') AND value IS NOT NULL GROUP BY ALL;

CREATE TABLE chosen AS
SELECT m.* FROM modifier m LEFT JOIN staging_basis s USING (person_id, grp)
WHERE (m.value IS NOT NULL OR m.num IS NOT NULL)
    AND (m.item NOT IN ('t', 'n', 'm', 'stage') OR m.basis IS NOT DISTINCT FROM s.basis)
QUALIFY m.d = min(m.d) OVER (PARTITION BY m.person_id, m.grp, m.item);

CREATE TABLE item AS
SELECT person_id, grp, item,
    CASE WHEN count(DISTINCT value) = 1 THEN min(value) END AS value,
    CASE WHEN count(DISTINCT num) = 1 THEN min(num) END AS num,
    count(DISTINCT value) + count(DISTINCT num) > 1 AS conflict,
    CASE WHEN item IN ('t', 'n', 'm', 'stage') THEN min(basis) END AS basis,
    CASE WHEN count(DISTINCT coalesce(system, '?')) = 1 THEN min(system) END AS system
FROM chosen GROUP BY person_id, grp, item;

CREATE TABLE tumour AS
SELECT g.person_id, g.grp,
    row_number() OVER (PARTITION BY g.person_id ORDER BY g.d0, g.grp) AS tumour_seq,
    g.primary_site, g.icd10, g.histology,
    CASE WHEN count(DISTINCT coalesce(i.system, '?'))
        FILTER (WHERE i.item IN ('t', 'n', 'm', 'stage')) = 1
        THEN min(i.system) FILTER (WHERE i.item IN ('t', 'n', 'm', 'stage')) END AS stage_system,
    min(i.basis) AS stage_basis,
    min(i.value) FILTER (WHERE i.item = 't') AS t_category,
    min(i.value) FILTER (WHERE i.item = 'n') AS n_category,
    min(i.value) FILTER (WHERE i.item = 'm') AS m_category,
    min(i.value) FILTER (WHERE i.item = 'stage') AS stage_group,
    min(i.value) FILTER (WHERE i.item = 'grade') AS grade,
    min(i.num) FILTER (WHERE i.item = 'size') AS tumour_size_mm,
    CAST(min(i.num) FILTER (WHERE i.item = 'nodes_positive') AS INTEGER) AS nodes_positive,
    CAST(min(i.num) FILTER (WHERE i.item = 'nodes_examined') AS INTEGER) AS nodes_examined
FROM tumour_grp g LEFT JOIN item i USING (person_id, grp)
GROUP BY g.person_id, g.grp, g.d0, g.primary_site, g.icd10, g.histology;
"""


TREATMENT_TABLES = """
CREATE TABLE tx_event AS
SELECT 'drug_exposure' AS tbl, x.drug_exposure_id AS event_id, x.person_id, m.drug_type AS type,
    m.drug_key AS agent_key, m.code, x.drug_exposure_start_date AS s,
    coalesce(x.drug_exposure_end_date, x.drug_exposure_start_date) AS e
FROM drug_exposure x JOIN meaning m ON m.concept_id = x.drug_concept_id
WHERE m.drug_type IS NOT NULL
UNION ALL
SELECT 'procedure_occurrence', x.procedure_occurrence_id, x.person_id, m.procedure_type,
    m.procedure_type, m.code, x.procedure_date, coalesce(x.procedure_end_date, x.procedure_date)
FROM procedure_occurrence x JOIN meaning m ON m.concept_id = x.procedure_concept_id
WHERE m.procedure_type IS NOT NULL;

CREATE TABLE intent AS
SELECT f.field AS tbl, x.measurement_event_id AS event_id, v.intent
FROM measurement x
JOIN meaning f ON f.concept_id = x.meas_event_field_concept_id AND f.field IS NOT NULL
JOIN meaning i ON i.concept_id = x.measurement_concept_id AND i.item = 'intent'
JOIN meaning v ON v.concept_id = x.value_as_concept_id AND v.intent IS NOT NULL;

CREATE TABLE tx_episode AS
SELECT x.episode_id, x.person_id, k.episode_kind AS kind, x.episode_start_date AS s,
    coalesce(x.episode_end_date, x.episode_start_date) AS e, o.drug_type, o.procedure_type,
    o.code AS object_code, k.label
FROM episode x JOIN meaning k ON k.concept_id = x.episode_concept_id
LEFT JOIN meaning o ON o.concept_id = x.episode_object_concept_id
WHERE k.episode_kind IN ('surgery', 'radiotherapy', 'regimen');

CREATE TABLE linked AS
SELECT DISTINCT t.episode_id, f.field AS tbl, ee.event_id
FROM episode_event ee JOIN tx_episode t USING (episode_id)
JOIN meaning f ON f.concept_id = ee.episode_event_field_concept_id AND f.field IS NOT NULL;

CREATE TABLE era_step AS
SELECT x.*, CASE WHEN x.s <= max(x.e) OVER w
    + CASE WHEN x.type = 'surgery' THEN 0 ELSE $gap END THEN 0 ELSE 1 END AS new_era
FROM tx_event x ANTI JOIN linked l ON l.tbl = x.tbl AND l.event_id = x.event_id
WINDOW w AS (PARTITION BY x.person_id, x.type, x.agent_key ORDER BY x.s, x.e
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING);

CREATE TABLE era AS
SELECT *, sum(new_era) OVER (PARTITION BY person_id, type, agent_key ORDER BY s, e
                             ROWS UNBOUNDED PRECEDING) AS era
FROM era_step;

CREATE TABLE treatment AS
SELECT x.person_id, x.type, min(x.s) AS s, max(x.e) AS e,
    CASE WHEN count(DISTINCT x.code) = 1 THEN min(x.code) END AS agent_code,
    CASE WHEN count(DISTINCT i.intent) = 1 THEN min(i.intent) END AS intent
FROM era x LEFT JOIN intent i ON i.tbl = x.tbl AND i.event_id = x.event_id
GROUP BY x.person_id, x.type, x.agent_key, x.era
UNION ALL
SELECT t.person_id,
    CASE WHEN t.kind = 'regimen' THEN coalesce(t.drug_type, lt.type) ELSE t.kind END,
    t.s, t.e,
    CASE WHEN t.kind = 'regimen' AND t.drug_type IS NOT NULL THEN t.object_code
         WHEN t.kind = t.procedure_type THEN t.object_code END,
    ei.intent
FROM tx_episode t
LEFT JOIN (SELECT l.episode_id, CASE WHEN count(DISTINCT x.type) = 1 THEN min(x.type) END
           AS type FROM linked l JOIN tx_event x USING (tbl, event_id) GROUP BY ALL) lt
    USING (episode_id)
LEFT JOIN (SELECT event_id AS episode_id, CASE WHEN count(DISTINCT intent) = 1
           THEN min(intent) END AS intent FROM intent WHERE tbl = 'episode' GROUP BY ALL) ei
    USING (episode_id);
""".replace("$gap", str(ERA_GAP_DAYS))

SELECT_PATIENT = """
SELECT CAST(p.person_id AS VARCHAR) AS patient_id, g.sex,
    CASE WHEN age > $cap THEN $cap ELSE age END AS age_at_diagnosis
FROM (
    SELECT p.*, CASE WHEN b.birth IS NOT NULL THEN year(o.origin) - year(b.birth)
        - CASE WHEN strftime(o.origin, '%m%d') < strftime(b.birth, '%m%d') THEN 1 ELSE 0 END
        ELSE year(o.origin) - p.year_of_birth END AS age
    FROM person p JOIN origin o USING (person_id)
    LEFT JOIN (SELECT person_id, coalesce(CAST(birth_datetime AS DATE), TRY_CAST(
        printf('%04d-%02d-%02d', year_of_birth, month_of_birth, day_of_birth) AS DATE)) AS birth
        FROM person) b USING (person_id)
) p
LEFT JOIN meaning g ON g.concept_id = p.gender_concept_id
ORDER BY p.person_id
""".replace("$cap", str(AGE_CAP))
SELECT_TUMOUR = """
SELECT CAST(person_id AS VARCHAR) AS patient_id, * EXCLUDE (person_id, grp)
FROM tumour ORDER BY person_id, tumour_seq
"""
SELECT_BIOMARKER = """
SELECT CAST(x.person_id AS VARCHAR) AS patient_id, b.biomarker AS code,
    coalesce(v.result, 'unknown') AS result, x.value_as_number AS value, u.ucum AS unit,
    x.measurement_date - o.origin AS day
FROM measurement x JOIN origin o USING (person_id)
JOIN meaning b ON b.concept_id = x.measurement_concept_id AND b.biomarker IS NOT NULL
LEFT JOIN meaning v ON v.concept_id = x.value_as_concept_id
LEFT JOIN meaning u ON u.concept_id = x.unit_concept_id
ORDER BY x.person_id, day, code
"""
SELECT_TREATMENT = """
SELECT CAST(x.person_id AS VARCHAR) AS patient_id, x.type, x.s - o.origin AS start_day,
    x.e - o.origin AS end_day, x.agent_code, x.intent
FROM treatment x JOIN origin o USING (person_id) WHERE x.type IS NOT NULL
ORDER BY x.person_id, start_day, x.type, end_day
"""
