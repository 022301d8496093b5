"""Importers that bring a site's own data (CSV/Parquet, OMOP CDM, FHIR mCODE) into the model."""

YEAR_OF_BIRTH_AGES = "ages at diagnosis from the year of birth only (OHDSI convention)"
"""The admin's note for patients whose age is the year of diagnosis less the year of birth:
what every importer does when the source's birth date leaves the age open."""
