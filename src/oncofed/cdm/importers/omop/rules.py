"""Which persons are excluded, and why. A value the model has a field for that is in the source
but cannot be read (a concept the importer does not understand or of a code system the field
does not take, an impossible date, values of one tumour that disagree) is never left null: its
person is excluded. Concept id 0 ("No matching concept") and NULL are absent values, not
unreadable ones; concepts the model has no field for (another drug, another measurement) are
only counted for the site admin.

Each rule is a query of the person ids that break it, over the work tables of ``sql`` and
``outcome``; a person is counted once, under the first rule broken, in the order of ``RULES``,
and listed for the site admin with every rule broken. Reasons name the table, the field and
the rule, never a value."""

from __future__ import annotations

from collections.abc import Sequence

from oncofed.cdm.importers.omop.sql import CODES, COUNTS, ITEMS, STAGING

NO_DIAGNOSIS = "condition_occurrence: no primary cancer condition"
_CONCEPT = "concept not interpretable"
_SYSTEM = "code system not supported"
_CONFLICT = "conflicting values"
_MARKER = (
    "SELECT x.person_id FROM measurement x"
    " JOIN meaning b ON b.concept_id = x.measurement_concept_id AND b.biomarker IS NOT NULL"
)
_DIAGNOSED = "JOIN origin USING (person_id)"

_TREATED = "drug_exposure, procedure_occurrence or episode"
RULES: tuple[tuple[str, str, str], ...] = (
    ("patient: more than one person row", "person",
     "SELECT person_id FROM person GROUP BY person_id HAVING count(*) > 1"),
    ("tumour: cancer condition without a start date", "condition_occurrence",
     "SELECT person_id FROM cond WHERE malignant AND d IS NULL"),
    (f"tumour.icd10: {_CONCEPT}", "condition_occurrence",
     "SELECT person_id FROM cond WHERE icd10_bad"),
    (NO_DIAGNOSIS, "person", "SELECT person_id FROM person ANTI JOIN origin USING (person_id)"),
    (f"patient.sex: {_SYSTEM}", "person",
     "SELECT person_id FROM patient p JOIN meaning g ON g.concept_id = p.gender_concept_id"
     " WHERE p.gender_concept_id <> 0 AND g.domain <> 'Gender'"),
    (f"patient.sex: {_CONCEPT}", "person",
     "SELECT person_id FROM patient p LEFT JOIN meaning g ON g.concept_id = p.gender_concept_id"
     " WHERE p.gender_concept_id <> 0 AND g.sex IS NULL"),
    ("patient.age_at_diagnosis: impossible birth date", "person",
     "SELECT person_id FROM patient WHERE month_of_birth NOT BETWEEN 1 AND 12"
     " OR day_of_birth NOT BETWEEN 1 AND 31"
     " OR (month_of_birth IS NOT NULL AND day_of_birth IS NOT NULL AND parts IS NULL)"),
    (f"patient.age_at_diagnosis: {_CONFLICT}", "person",
     "SELECT person_id FROM patient WHERE year_of_birth <> year(stamp)"
     " OR month_of_birth <> month(stamp) OR day_of_birth <> day(stamp)"),
    ("patient.age_at_diagnosis: birth after diagnosis", "person",
     "SELECT person_id FROM patient"
     " WHERE birth > origin OR (birth IS NULL AND year_of_birth > year(origin))"),
    *((f"tumour.{'primary_site' if c == 'site' else c}: {_CONFLICT}", "condition_occurrence",
       f"SELECT person_id FROM tumour_grp WHERE {c}_conflict") for c in CODES),
    *((f"tumour.{ITEMS[item]}: {_CONCEPT}", "measurement",
       f"SELECT person_id FROM modifier WHERE item = '{item}' AND value IS NULL")
      for item in (*STAGING, "grade")),
    *((f"tumour.{name}: not a whole number from {low:g} to {high:g}", "measurement",
       f"SELECT person_id FROM modifier"
       f" WHERE item = '{name}' AND number IS NOT NULL AND num IS NULL")
      for name, (low, high) in COUNTS.items()),
    *((f"tumour.{name}: {_CONFLICT}", "measurement",
       f"SELECT person_id FROM item WHERE item = '{item}' AND conflict")
      for item, name in ITEMS.items()),
    (f"tumour.tumour_size_mm: {_CONFLICT}", "measurement",
     "SELECT person_id FROM size_item WHERE conflict AND NOT unread"),
    (f"tumour.stage_system: {_CONFLICT}", "measurement",
     "SELECT person_id FROM staging WHERE conflict"),
    (f"biomarker.result: {_CONCEPT}", "measurement",
     f"{_MARKER} LEFT JOIN meaning v ON v.concept_id = x.value_as_concept_id"
     " WHERE x.value_as_concept_id <> 0 AND v.result IS NULL"),
    (f"biomarker.unit: {_SYSTEM}", "measurement",
     f"{_MARKER} JOIN meaning u ON u.concept_id = x.unit_concept_id"
     " WHERE x.unit_concept_id <> 0 AND u.vocabulary <> 'UCUM'"),
    (f"biomarker.unit: {_CONCEPT}", "measurement",
     f"{_MARKER} LEFT JOIN meaning u ON u.concept_id = x.unit_concept_id"
     " WHERE x.unit_concept_id <> 0 AND u.concept_id IS NULL"),
    (f"treatment.type: {_CONCEPT}", "episode",
     "SELECT person_id FROM treatment WHERE type IS NULL"),
    (f"treatment.type: {_CONFLICT}", "episode",
     "SELECT person_id FROM tx_episode WHERE kind <> 'regimen' AND procedure_type <> kind"),
    (f"treatment.agent_code: {_CONCEPT}", "episode",
     "SELECT person_id FROM tx_episode WHERE object_id <> 0 AND object_domain IS NULL"),
    (f"treatment.intent: {_CONCEPT}", "measurement",
     "SELECT person_id FROM treatment WHERE unread_intent"),
    (f"treatment.intent: {_CONFLICT}", "measurement",
     "SELECT person_id FROM treatment WHERE intents > 1"),
    ("treatment.end_day: before start_day", _TREATED,
     "SELECT person_id FROM treatment WHERE backwards"),
    (f"outcome.os_days: {_CONFLICT}", "death", "SELECT person_id FROM dead WHERE dates > 1"),
    ("outcome.os_days: death before diagnosis", "death",
     f"SELECT person_id FROM dead {_DIAGNOSED} WHERE dd < origin"),
    (f"outcome.cause_of_death: {_CONCEPT}", "death",
     "SELECT person_id FROM dead WHERE unread_cause"),
    (f"outcome.cause_of_death: {_CONFLICT}", "death",
     "SELECT person_id FROM dead WHERE causes > 1"),
    ("outcome.last_followup_day: before diagnosis", "observation_period",
     f"SELECT person_id FROM followup {_DIAGNOSED} WHERE fu < origin"),
    ("outcome.rfs_days: recurrence not after diagnosis", "episode",
     "SELECT person_id FROM recurrence WHERE day <= 0"),
)  # fmt: skip
"""(reason, the OMOP table whose rows break it, query of the person ids that break it), in the
order reasons are given."""
REASONS: tuple[str, ...] = tuple(reason for reason, _, _ in RULES)


def where(rules: Sequence[int]) -> str:
    """The source tables of the rules a person breaks, in rule order: ``person table``,
    ``person and death tables``."""
    tables = list(dict.fromkeys(RULES[rule][1] for rule in rules))
    named = " and ".join([", ".join(tables[:-1]), tables[-1]] if len(tables) > 1 else tables)
    return f"{named} table{'s' if len(tables) > 1 else ''}"


REJECTION = (
    "CREATE TABLE broken AS SELECT DISTINCT person_id, rule FROM ("
    + " UNION ALL ".join(
        f"SELECT person_id, {i} AS rule FROM ({sql})" for i, (_, _, sql) in enumerate(RULES)
    )
    + ") SEMI JOIN person USING (person_id);"
    " CREATE TABLE rejection AS SELECT person_id, min(rule) AS rule FROM broken GROUP BY ALL;"
    " CREATE TABLE kept AS SELECT * FROM origin ANTI JOIN rejection USING (person_id);"
)
"""Creates ``broken`` (person_id, index of each rule broken), ``rejection`` (person_id, index of
the first rule broken) and ``kept`` (the persons imported, with their time origin)."""
