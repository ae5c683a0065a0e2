"""The pipeline: stages, stamps, manifest, the doit tasks and runner, and the driver matrix."""
