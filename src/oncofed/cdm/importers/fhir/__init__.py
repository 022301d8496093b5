"""FHIR R4 mCODE bundles into the common oncology data model.

The source is one Bundle (type collection, transaction, batch, searchset or document) or a
folder of ``*.json`` bundles. Every resource is validated with ``fhir.resources`` (its R4B
models, which read R4 mCODE content); a malformed one stops the import with a SourceError
naming the file and the entry (counted from 0, as in ``Bundle.entry[3]``). Resources link to
their Patient through ``subject`` references (a ResearchSubject through ``individual``) resolved
within the same bundle.

What is read, and how:

- Patient: gender -> sex; birthDate -> age at diagnosis in whole years (a partial birthDate,
  ``YYYY`` or ``YYYY-MM``: the age it fixes, else the year of diagnosis less the year of
  birth, OHDSI's convention, with a note for the admin); deceasedDateTime / deceasedBoolean ->
  death.
- Primary cancer: a Condition with the mCODE PrimaryCancerCondition profile, an ICD-10 or
  ICD-10-CM code of a primary neoplasm (C00-C76, C80-C97, D00-D09, D37-D49) or the mCODE
  histology extension; metastases (C77-C79, SecondaryCancerCondition) are not primaries. One
  tumour row per condition, tumour_seq by onset (onsetDateTime or onsetPeriod.start, a full
  date for every primary); the first onset is day 0. ``code`` ICD-10/ICD-10-CM (``C50.9``,
  ``C50.911``) -> icd10; ``bodySite`` -> primary_site (never derived from the ICD-10 code):
  its ICD-O-3 topography (``C50.9`` or ``C509``), else its SNOMED CT body structure through
  the shipped crosswalk (:mod:`.sites`); a body site neither gives is left missing with a
  note. Of several body sites in one ICD-O-3 group the most specific counts (C50.4 over
  C50.9); sites of several groups, or of different parts of one (C50.2 and C50.4), leave it
  missing with a note, never excluding the patient. Laterality from the mCODE laterality
  extension (SNOMED left/right/bilateral) and from a lateralised SNOMED concept (Left breast
  structure), which must agree; the histology-morphology-behavior extension with an ICD-O-3
  code (``8500/3``) -> histology.
- Tumour observations, linked by ``focus`` to a primary cancer (or to the only one): TNM
  categories and stage groups (LOINC below; AJCC codes ``cT2``, ``pN1a``, ``T2``, stage
  groups ``IIB`` or ``2B``; the prefix must match the basis, y/r/a staging is not read),
  pathological staging when there is any, else clinical, never mixed; the method (SNOMED
  AJCC 7th/8th edition) -> stage_system; grade (SNOMED G1-G4/GX or AJCC ``G1``); size in mm or
  cm (the observation's value or its 33728-7 component); nodes positive/examined; ECOG and
  Karnofsky (valueInteger, a whole valueQuantity or LOINC answers). Several observations of
  one kind for one tumour (and basis) must agree.
- Tumour markers (a LOINC code of ``fields.BIOMARKERS``): result from valueCodeableConcept and
  interpretation, which must agree (LOINC, SNOMED or HL7 v3 codes for positive, negative,
  equivocal, indeterminate -> unknown), value and UCUM unit from valueQuantity; no result ->
  unknown.
- Procedures: surgery (category SNOMED 387713003, the mCODE surgical profile or a cancer
  operation of ``CANCER_SURGERY``, such as a mastectomy, sent without either), radiotherapy
  (SNOMED 108290001 / 1217123003 or an mCODE radiotherapy profile); agent_code = SNOMED code.
  Any other Procedure is type ``other_procedure`` with its SNOMED code and days.
- Medications (Request, Administration, Statement): the RxNorm ingredient (``DRUGS``), or the
  ingredient of a clinical drug (``CLINICAL_DRUGS``: tamoxifen 10 MG Oral Tablet is
  tamoxifen), decides the type and is the agent_code; another drug (another RxNorm code,
  another code system or text only) counts as type ``other`` when the resource says it is
  cancer related (an mCODE cancer-related profile or the treatment-intent extension),
  otherwise it is type ``other_medication`` with its RxNorm code and days. ``other_procedure``
  and ``other_medication`` say what the importer does not classify as cancer treatment, not
  that it is none. Such a row the model cannot hold (without such a code or a full start date,
  with a day outside -36500 to 36500 or its end before its start) is dropped with a note by
  kind; its days are no follow-up, and it never excludes the patient. An administration of a
  request in the bundle belongs to that request. Intent from the mCODE
  procedure/treatment-intent extension (SNOMED).
- Clinical trial: a ResearchSubject whose status says the person entered the study
  (``studies.ENTERED``) -> outcome.randomisation_day (period.start) and patient.trial_arm
  (actualArm, else assignedArm); subjects in several studies leave both missing (noted).
- Outcome: the Patient's deceased[x], the CancerDiseaseStatus (LOINC 97509-4) observations
  ("worsened", SNOMED 271299001, is a recurrence or progression) and the study entry; each
  endpoint only from the records that are evidence for it. The rules are those of
  :func:`outcome`.

Code systems read (in ``codes``): LOINC, SNOMED CT, RxNorm, UCUM, AJCC
(``http://cancerstaging.org``), ICD-10-CM and WHO ICD-10 (``http://hl7.org/fhir/sid/icd-10-cm``,
``.../icd-10``), ICD-O-3 (``http://terminology.hl7.org/CodeSystem/icd-o-3`` or its OID
``urn:oid:2.16.840.1.113883.6.43.1``), HL7 v3 ObservationInterpretation. Every date becomes
days from the diagnosis date (a dateTime counts by its own calendar day). Resources with
status entered-in-error, cancelled, not-done, not-taken, draft or intended, and Conditions
refuted or entered in error, are skipped.

Rows that fail are excluded, never silently altered. When a resource holds a value for a
model field that cannot be interpreted, the patient is left out and counted in ``rejected``
under ``table.field: rule`` (the first such value found, so counts sum to patients; a reason
never holds a value); the other resources are still read, and ``rejections`` lists the patient
with every reason found:

- ``code not interpretable``: a code of a supported system the map does not cover (SNOMED
  grade 99999, AJCC ``cN9`` or ``ypT2``, a gender outside male/female/other/unknown), a
  concept with text only, an extension of a model field without a coded value;
  ``code system not supported``: codes only from other systems (SNOMED-coded TNM or
  diagnosis, a local HER2 code; never a body site, which is left missing instead). A concept
  may carry several codings: the first one read counts, so a supported translation beside a
  local code is enough (an ICD-O-3 body site before a SNOMED CT one).
- ``value type not supported`` (valueString for a grade), ``unit not supported`` (a size not in
  mm or cm, a marker value without a UCUM unit), ``comparator not supported`` (``<5``),
  ``not a whole number`` and ``outside LOW-HIGH`` (counts and performance status).
- ``conflicting values``: observations of one kind for one tumour, a marker's value and
  interpretations, a tumour's lateralities that differ.
- ``not linked to one primary cancer``: a tumour observation without a focus when the patient
  has several primary cancers.
- ``partial date``: a partial date of a model day (a marker, a treatment, death, a disease
  status), or a partial date of another
  observation when it could be the last follow-up (no death date and no disease status).
- ``birth after diagnosis``, ``before diagnosis`` (death, recurrence), ``no date`` (a
  recurrence).

Patients are also excluded without a primary cancer and without a full onset date for each
primary cancer (``patient: ...``). Resources and codes that are not model values (another
resource type or LOINC code, an other procedure or medication the model cannot hold, a drug
that the RxNorm map does not type, a secondary cancer, an observation about one or without a
value, a disease status other than "worsened" without a date from diagnosis on, a body site
the crosswalk does not map, body sites that disagree, a ResearchSubject not read, an endpoint
without evidence) are
counted in ``notes``, which the site admin sees, for the patients kept.

Modules: ``codes`` (code systems, code maps, AJCC and ICD-10 parsing), ``sites`` (the SNOMED CT
body site crosswalk), ``elements`` (reading FHIR data types), ``bundles`` (files, validation,
patients and references), ``context`` (one patient's state and the rejection rules),
``observations``, ``treatments``, ``studies`` and ``mapper`` (one patient's resources -> rows),
``outcomes`` and ``importer`` (:func:`import_fhir`). Import from this package, not from its
modules.
"""

from oncofed.cdm.importers.fhir.codes import ajcc_category, ajcc_stage_group
from oncofed.cdm.importers.fhir.importer import FhirImport, import_fhir
from oncofed.cdm.importers.fhir.outcomes import outcome

__all__ = ["FhirImport", "ajcc_category", "ajcc_stage_group", "import_fhir", "outcome"]
