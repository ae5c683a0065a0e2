"""Core helpers every package may use: errors, files, text, logs, progress, signing."""
