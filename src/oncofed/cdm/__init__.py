"""Common oncology data model: field catalogue, importers, validation, de-identification,
data quality report and cohort selection at the edge."""
