"""Release bundles: SBOMs, provenance, signatures, publishing to an OCI registry, the rebuild check
and the reproducible step environment."""
