"""The rk3576-build command: one class per command."""
