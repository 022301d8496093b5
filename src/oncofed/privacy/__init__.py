"""Privacy protections: small-cell suppression (secure aggregation and DP come next)."""
