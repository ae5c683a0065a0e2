"""Release bundles: SBOMs, provenance, signatures, the rebuild check."""
