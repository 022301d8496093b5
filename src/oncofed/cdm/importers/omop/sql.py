"""The duckdb SQL that turns the loaded OMOP tables into the model's patient, tumour, biomarker
and treatment tables. It joins ``meaning`` (one row per concept, see ``concepts``) and
``srcval`` (ICD-O-3 source values); ``TUMOUR_TABLES``, ``PATIENT_TABLE`` then
``TREATMENT_TABLES`` create the work tables, ``rules`` the table ``kept`` of the persons
imported, and each ``SELECT_*`` query reads one model table for them. Where a value cannot be
read or two values disagree, the work tables keep a flag and ``rules`` excludes the person.

* Primary cancer: a condition whose concept or source concept is a primary cancer (see
  ``concepts``), or whose ``condition_source_value`` has the ICDO3 form. Conditions of one
  person in the same three-character site (or ICD-10 category) are one tumour, diagnosed at the
  earliest date; tumours are numbered by that date. Its ICD-10 code, histology and site must
  agree across its conditions and, within a condition, between the concept, the source concept
  and the source value (the site an ICD-10 code implies is used only when no ICD-O-3 site is
  given).
* Time origin: the diagnosis date of the first tumour.
* Age at diagnosis: whole years from the birth date (``birth_datetime``, else year, month and
  day of birth), or the difference of the years when only the year is known (OHDSI); ages are
  not capped here (the import pipeline caps them).
* Cancer modifiers: measurements linked to a cancer condition by ``measurement_event_id`` and
  the ``condition_occurrence.condition_occurrence_id`` field concept (others are not read).
  Stage items of one basis only: pathological when any, else clinical, else without basis; per
  item the earliest measurement, whose values must agree; the AJCC edition is kept when every
  stage item gives the same one. Node counts as whole numbers in range.
* Tumour size (``size_row``, ``size_item``): measurements of a size concept (``concepts``)
  linked to a cancer condition give that tumour's size. One linked to no event gives the size
  of a person's only primary tumour when it is dated within ``UNLINKED_SIZE_DAYS`` of its
  diagnosis; for a person with several primaries it could be any one's, so it is not read
  (nor is one outside the window). Those linked to another event are not read either (NAACCR's
  ETL copies a condition's modifiers onto its disease episode); sizes not read have no ``grp``
  and are counted in a note. Of the ones with a value, the one closest to the tumour's
  diagnosis is read; at equal distance the largest dimension (LOINC 33728-7, NAACCR) wins
  over any size (LOINC 21889-1), then the earlier day.
  Its value in mm or cm (the UCUM unit concept) becomes mm; one without such a unit, or coded
  as a range by a value concept (NAACCR's "less than 1 cm"), leaves the size empty
  (``unread``), never guessed. Values read for one day and kind that disagree are a conflict.
* Treatments: each surgery or radiotherapy episode is one treatment (its procedure, if any, the
  agent code), a regimen episode one per kind of its drug and of the drug exposures it links
  (no kind is a type that cannot be read); drug exposures and procedures of a known kind that
  no episode links are joined into eras (``ERA_GAP_DAYS``), the agent code left null when an
  era holds several products of one agent. The intent comes from measurements linked to the
  event or the episode (or the events it links).
"""

from __future__ import annotations

from oncofed.cdm.fields import field as model_field
from oncofed.cdm.importers.omop.concepts import STANDARD_UNITS

ERA_GAP_DAYS = 30
"""Drug exposures of one agent (and radiotherapy sessions) less than this many days apart are
one treatment, as OMOP's drug_era persistence window."""

UNLINKED_SIZE_DAYS = (-30, 90)
"""Days from diagnosis (both included) within which a size linked to no event is read as the
size at diagnosis of a person's single primary: imaging and biopsy that size a tumour precede
the diagnosis date by up to a few weeks, and the pathological size of the first surgery
follows it within about three months; a size from later on is more likely a measure of
response or relapse than the size at diagnosis."""
CODES = {"icd10": ("a", "b"), "histology": ("a", "b", "s"), "site": ("a", "b", "s")}
"""The diagnosis codes of a condition and where each is read: ``a`` the condition concept, ``b``
the source concept, ``s`` the ICD-O-3 source value; two of them that differ are a conflict."""
STAGING = {"t": "t_category", "n": "n_category", "m": "m_category", "stage": "stage_group"}
ITEMS = {**STAGING, "grade": "grade",
         "nodes_positive": "nodes_positive", "nodes_examined": "nodes_examined"}  # fmt: skip
"""Cancer Modifier item -> the tumour field it gives (the size is read apart)."""
COUNTS = {n: (model_field("tumour", n).minimum or 0, model_field("tumour", n).maximum or 0)
          for n in ("nodes_positive", "nodes_examined")}  # fmt: skip
"""Node counts are read when they are whole numbers in the field's range, else rejected."""


def _cond_codes() -> str:
    """The columns of ``cond``: each code, and whether its sources disagree."""
    columns = []
    for code, sources in CODES.items():
        found = ", ".join(f"{x}.{code}" for x in sources)
        implied = ", a.icd10_site, b.icd10_site" if code == "site" else ""
        columns.append(f"coalesce({found}{implied}) AS {code}")
        columns.append(f"len(list_distinct([{found}])) > 1 AS {code}_conflict")
    return ",\n    ".join(columns)


def _group_codes() -> str:
    """The columns of ``tumour_grp``: each code, and whether the tumour's conditions disagree."""
    return ",\n    ".join(
        f"min({c}) AS {c}, count(DISTINCT {c}) > 1 OR bool_or({c}_conflict) AS {c}_conflict"
        for c in CODES
    )


def _standard_units() -> str:
    """The size unit of a unit concept the CONCEPT table lacks (``STANDARD_UNITS``)."""
    cases = " ".join(f"WHEN {i} THEN '{unit}'" for i, unit in STANDARD_UNITS.items())
    return f"CASE m.unit_concept_id {cases} END"


def _counts() -> str:
    """The CASE branches reading node counts."""
    return "\n         ".join(
        f"WHEN mm.item = '{name}' AND m.value_as_number BETWEEN {low:g} AND {high:g} "
        "AND m.value_as_number = floor(m.value_as_number) THEN m.value_as_number"
        for name, (low, high) in COUNTS.items()
    )


TUMOUR_TABLES = f"""
CREATE TABLE cond AS
SELECT co.person_id, co.condition_occurrence_id AS cond_id, co.condition_start_date AS d,
    {_cond_codes()},
    coalesce(a.malignant, false) OR coalesce(b.malignant, false)
        OR coalesce(s.malignant, false) AS malignant,
    coalesce(a.icd10_bad, false) OR coalesce(b.icd10_bad, false) AS icd10_bad
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
    {_group_codes()}
FROM cancer GROUP BY person_id, grp;

CREATE TABLE origin AS
SELECT person_id, min(d0) AS origin FROM tumour_grp GROUP BY person_id;

CREATE TABLE modifier AS
SELECT c.person_id, c.grp, m.measurement_date AS d, mm.item, mm.basis, mm.system, mm.label,
    m.measurement_concept_id AS concept_id, m.value_as_number AS number, mm.biomarker,
    CASE WHEN mm.item IN ('t', 'n', 'm', 'stage', 'grade') THEN mm.item_value END AS value,
    CASE {_counts()}
    END AS num
FROM measurement m
JOIN meaning f ON f.concept_id = m.meas_event_field_concept_id
    AND f.field = 'condition_occurrence'
JOIN cancer c ON c.cond_id = m.measurement_event_id AND c.person_id = m.person_id
LEFT JOIN meaning mm ON mm.concept_id = m.measurement_concept_id;

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
SELECT person_id, grp, item, min(value) AS value, min(num) AS num,
    count(DISTINCT value) + count(DISTINCT num) > 1 AS conflict
FROM chosen GROUP BY person_id, grp, item;

CREATE TABLE staging AS
SELECT person_id, grp, min(basis) AS basis,
    CASE WHEN count(DISTINCT coalesce(system, '?')) = 1 THEN min(system) END AS system,
    count(DISTINCT system) > 1 AS conflict
FROM chosen WHERE item IN ('t', 'n', 'm', 'stage') GROUP BY person_id, grp;

CREATE TABLE size_row AS
SELECT m.person_id, m.measurement_date AS d, s.size_kind, i.primaries,
    coalesce(c.grp, CASE WHEN i.primaries = 1
        AND m.measurement_date BETWEEN i.d0 + $first AND i.d0 + $last THEN i.grp END) AS grp,
    CASE WHEN coalesce(m.value_as_concept_id, 0) = 0 THEN
        CASE coalesce(u.ucum, CASE WHEN u.concept_id IS NULL THEN {_standard_units()} END)
            WHEN 'mm' THEN m.value_as_number WHEN 'cm' THEN m.value_as_number * 10 END
    END AS num
FROM measurement m
JOIN meaning s ON s.concept_id = m.measurement_concept_id AND s.item = 'size'
LEFT JOIN meaning f ON f.concept_id = m.meas_event_field_concept_id
    AND f.field = 'condition_occurrence'
LEFT JOIN cancer c ON f.concept_id IS NOT NULL AND c.cond_id = m.measurement_event_id
    AND c.person_id = m.person_id
LEFT JOIN (SELECT person_id, min(grp) AS grp, min(d0) AS d0, count(*) AS primaries
           FROM tumour_grp GROUP BY ALL) i
    ON m.measurement_event_id IS NULL AND i.person_id = m.person_id
LEFT JOIN meaning u ON u.concept_id = m.unit_concept_id
WHERE m.value_as_number IS NOT NULL OR coalesce(m.value_as_concept_id, 0) <> 0;

CREATE TABLE size_item AS
SELECT person_id, grp, min(num) AS num, bool_or(num IS NULL) AS unread,
    count(DISTINCT num) > 1 AS conflict
FROM (
    SELECT r.* FROM size_row r JOIN tumour_grp g USING (person_id, grp)
    QUALIFY rank() OVER (PARTITION BY r.person_id, r.grp
                         ORDER BY abs(r.d - g.d0), r.size_kind, r.d) = 1
) GROUP BY person_id, grp;

CREATE TABLE tumour AS
SELECT g.person_id, g.grp,
    row_number() OVER (PARTITION BY g.person_id ORDER BY g.d0, g.grp) AS tumour_seq,
    g.site AS primary_site, g.icd10, g.histology,
    s.system AS stage_system, s.basis AS stage_basis,
    min(i.value) FILTER (WHERE i.item = 't') AS t_category,
    min(i.value) FILTER (WHERE i.item = 'n') AS n_category,
    min(i.value) FILTER (WHERE i.item = 'm') AS m_category,
    min(i.value) FILTER (WHERE i.item = 'stage') AS stage_group,
    min(i.value) FILTER (WHERE i.item = 'grade') AS grade,
    CASE WHEN NOT z.unread THEN z.num END AS tumour_size_mm,
    CAST(min(i.num) FILTER (WHERE i.item = 'nodes_positive') AS INTEGER) AS nodes_positive,
    CAST(min(i.num) FILTER (WHERE i.item = 'nodes_examined') AS INTEGER) AS nodes_examined
FROM tumour_grp g LEFT JOIN item i USING (person_id, grp)
LEFT JOIN staging s USING (person_id, grp)
LEFT JOIN size_item z USING (person_id, grp)
GROUP BY g.person_id, g.grp, g.d0, g.site, g.icd10, g.histology, s.system, s.basis, z.unread,
    z.num;
""".replace("$first", str(UNLINKED_SIZE_DAYS[0])).replace("$last", str(UNLINKED_SIZE_DAYS[1]))


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
SELECT f.field AS tbl, x.measurement_event_id AS event_id, v.intent,
    x.value_as_concept_id <> 0 AND v.intent IS NULL AS unread
FROM measurement x
JOIN meaning f ON f.concept_id = x.meas_event_field_concept_id AND f.field IS NOT NULL
JOIN meaning i ON i.concept_id = x.measurement_concept_id AND i.item = 'intent'
LEFT JOIN meaning v ON v.concept_id = x.value_as_concept_id;

CREATE TABLE tx_episode AS
SELECT x.episode_id, x.person_id, k.episode_kind AS kind, x.episode_start_date AS s,
    coalesce(x.episode_end_date, x.episode_start_date) AS e, o.drug_type, o.procedure_type,
    o.code AS object_code, o.domain AS object_domain, x.episode_object_concept_id AS object_id
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

CREATE TABLE episode_type AS
SELECT t.episode_id, t.person_id, t.s, t.e, k.type, k.agent_code
FROM tx_episode t LEFT JOIN (
    SELECT episode_id, CASE WHEN kind = 'regimen' THEN drug_type ELSE kind END AS type,
        CASE WHEN kind = 'regimen' OR object_domain = 'Procedure' THEN object_code END
            AS agent_code
    FROM tx_episode WHERE kind <> 'regimen' OR drug_type IS NOT NULL
    UNION ALL
    SELECT l.episode_id, x.type, CASE WHEN count(DISTINCT x.code) = 1 THEN min(x.code) END
    FROM linked l JOIN tx_event x USING (tbl, event_id) JOIN tx_episode t USING (episode_id)
    WHERE t.kind = 'regimen' AND x.type IS DISTINCT FROM t.drug_type GROUP BY ALL
) k USING (episode_id);

CREATE TABLE treatment AS
SELECT x.person_id, x.type, min(x.s) AS s, max(x.e) AS e, bool_or(x.e < x.s) AS backwards,
    CASE WHEN count(DISTINCT x.code) = 1 THEN min(x.code) END AS agent_code,
    min(i.intent) AS intent, count(DISTINCT i.intent) AS intents,
    coalesce(bool_or(i.unread), false) AS unread_intent
FROM era x LEFT JOIN intent i ON i.tbl = x.tbl AND i.event_id = x.event_id
GROUP BY x.person_id, x.type, x.agent_key, x.era
UNION ALL
SELECT t.person_id, t.type, t.s, t.e, t.e < t.s, t.agent_code, min(i.intent),
    count(DISTINCT i.intent), coalesce(bool_or(i.unread), false)
FROM episode_type t LEFT JOIN (
    SELECT event_id AS episode_id, intent, unread FROM intent WHERE tbl = 'episode'
    UNION ALL
    SELECT l.episode_id, i.intent, i.unread FROM linked l JOIN intent i USING (tbl, event_id)
) i USING (episode_id)
GROUP BY t.episode_id, t.person_id, t.type, t.s, t.e, t.agent_code;
""".replace("$gap", str(ERA_GAP_DAYS))

PATIENT_TABLE = """
CREATE TABLE patient AS
SELECT *, coalesce(stamp, parts) AS birth FROM (
    SELECT p.person_id, p.gender_concept_id, o.origin, p.year_of_birth, p.month_of_birth,
        p.day_of_birth, CAST(p.birth_datetime AS DATE) AS stamp, TRY_CAST(printf(
            '%04d-%02d-%02d', p.year_of_birth, p.month_of_birth, p.day_of_birth) AS DATE) AS parts
    FROM person p JOIN origin o USING (person_id)
);
"""
"""Persons with a diagnosis, their time origin and birth date (from ``birth_datetime``, else
from year, month and day of birth; None when only the year is known)."""

SELECT_PATIENT = """
SELECT CAST(p.person_id AS VARCHAR) AS patient_id, g.sex,
    CASE WHEN p.birth IS NOT NULL THEN year(p.origin) - year(p.birth)
        - CASE WHEN strftime(p.origin, '%m%d') < strftime(p.birth, '%m%d') THEN 1 ELSE 0 END
        ELSE year(p.origin) - p.year_of_birth END AS age_at_diagnosis
FROM patient p SEMI JOIN kept USING (person_id)
LEFT JOIN meaning g ON g.concept_id = p.gender_concept_id
ORDER BY p.person_id
"""
SELECT_TUMOUR = """
SELECT CAST(person_id AS VARCHAR) AS patient_id, * EXCLUDE (person_id, grp)
FROM tumour SEMI JOIN kept USING (person_id) ORDER BY person_id, tumour_seq
"""
SELECT_BIOMARKER = """
SELECT CAST(x.person_id AS VARCHAR) AS patient_id, b.biomarker AS code,
    coalesce(v.result, 'unknown') AS result, x.value_as_number AS value, u.ucum AS unit,
    x.measurement_date - o.origin AS day
FROM measurement x JOIN kept o USING (person_id)
JOIN meaning b ON b.concept_id = x.measurement_concept_id AND b.biomarker IS NOT NULL
LEFT JOIN meaning v ON v.concept_id = x.value_as_concept_id
LEFT JOIN meaning u ON u.concept_id = x.unit_concept_id
ORDER BY x.person_id, day, code
"""
SELECT_TREATMENT = """
SELECT CAST(x.person_id AS VARCHAR) AS patient_id, x.type, x.s - o.origin AS start_day,
    x.e - o.origin AS end_day, x.agent_code, x.intent
FROM treatment x JOIN kept o USING (person_id)
ORDER BY x.person_id, start_day, x.type, end_day, x.agent_code, x.intent
"""
