"""Federated analytics: what a site computes on its cohort, and the pooled report."""
