"""FHIR R4 mCODE bundles into the common oncology data model.

The source is one Bundle (type collection, transaction, batch, searchset or document) or a
folder of ``*.json`` bundles. Every resource is validated with ``fhir.resources`` (its R4B
models, which read R4 mCODE content); a malformed one stops the import with a SourceError
naming the file and the entry (counted from 0, as in ``Bundle.entry[3]``). Resources link to
their Patient through ``subject`` references resolved within the same bundle.

What is read, and how:

- Patient: gender -> sex; birthDate -> age at diagnosis in whole years (a partial birthDate
  only when it fixes the age); deceasedDateTime / deceasedBoolean -> death.
- Primary cancer: a Condition with the mCODE PrimaryCancerCondition profile, an ICD-10 or
  ICD-10-CM code of a primary neoplasm (C00-C76, C80-C97, D00-D09, D37-D49) or the mCODE
  histology extension; metastases (C77-C79, SecondaryCancerCondition) are not primaries. One
  tumour row per condition, tumour_seq by onset; the first onset (onsetDateTime or
  onsetPeriod.start) is day 0. ``code`` ICD-10/ICD-10-CM (``C50.9``, ``C50.911``) -> icd10;
  ``bodySite`` ICD-O-3 topography (``C50.9`` or ``C509``) -> primary_site (never derived from
  the ICD-10 code), with the mCODE laterality extension (SNOMED left/right/bilateral); the
  histology-morphology-behavior extension with an ICD-O-3 code (``8500/3``) -> histology.
- Tumour observations, linked by ``focus`` to a primary cancer (or to the only one): TNM
  categories and stage groups (LOINC below; AJCC codes ``cT2``, ``pN1a``, ``T2``, stage
  groups ``IIB`` or ``2B``; the prefix must match the basis, y/r/a staging is not read),
  pathological staging when any is readable else clinical, never mixed; the method (SNOMED
  AJCC 7th/8th edition) -> stage_system; grade (SNOMED G1-G4/GX or AJCC ``G1``); size in mm or
  cm (the observation's value or its 33728-7 component); nodes positive/examined; ECOG and
  Karnofsky (valueInteger or LOINC answers). The earliest observation of each kind is used.
- Tumour markers (a LOINC code of ``fields.BIOMARKERS``): result from valueCodeableConcept or
  interpretation (LOINC, SNOMED or HL7 v3 codes for positive, negative, equivocal,
  indeterminate -> unknown), value and UCUM unit from valueQuantity; no result -> unknown.
- Procedures: surgery (category SNOMED 387713003 or the mCODE surgical profile), radiotherapy
  (SNOMED 108290001 / 1217123003 or an mCODE radiotherapy profile); agent_code = SNOMED code.
- Medications (Request, Administration, Statement): the RxNorm ingredient decides the type
  (``DRUGS``); another drug counts as type ``other`` when the resource says it is cancer
  related (an mCODE cancer-related profile or the treatment-intent extension), otherwise it is
  not a cancer treatment and is ignored. An administration of a request in the bundle belongs
  to that request. Intent from the mCODE procedure/treatment-intent extension (SNOMED).
- Outcome: the Patient's deceased[x] and the CancerDiseaseStatus (LOINC 97509-4) observations;
  "worsened" (SNOMED 271299001) is a recurrence or progression. The rules are those of
  :func:`outcome`.

Code systems read (in ``codes``): LOINC, SNOMED CT, RxNorm, UCUM, AJCC
(``http://cancerstaging.org``), ICD-10-CM and WHO ICD-10 (``http://hl7.org/fhir/sid/icd-10-cm``,
``.../icd-10``), ICD-O-3 (``http://terminology.hl7.org/CodeSystem/icd-o-3`` or its OID
``urn:oid:2.16.840.1.113883.6.43.1``), HL7 v3 ObservationInterpretation. Every date becomes
days from the diagnosis date (a dateTime counts by its own calendar day). Resources with
status entered-in-error, cancelled, not-done, not-taken, draft or intended, and Conditions
refuted or entered in error, are skipped. Anything else, or a value these maps do not cover
(SNOMED TNM or morphology codes, partial dates, unknown units), stays null and is counted in
``notes`` (reasons never hold a value); patients left out are counted in ``rejected``.

Modules: ``codes`` (code systems, code maps, AJCC and ICD-10 parsing), ``elements`` (reading
FHIR data types), ``bundles`` (files, validation, patients and references), ``context``,
``observations``, ``treatments`` and ``mapper`` (one patient's resources -> rows), ``outcomes``
and ``importer`` (:func:`import_fhir`). Import from this package, not from its modules.
"""

from oncofed.cdm.importers.fhir.codes import ajcc_category, ajcc_stage_group
from oncofed.cdm.importers.fhir.importer import FhirImport, import_fhir
from oncofed.cdm.importers.fhir.outcomes import outcome

__all__ = ["FhirImport", "ajcc_category", "ajcc_stage_group", "import_fhir", "outcome"]
