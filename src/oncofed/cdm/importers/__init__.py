"""Importers that bring a site's own data (CSV/Parquet, OMOP CDM, FHIR mCODE) into the model."""
