"""Demo sites' own data files, in the shapes real hospitals export."""
