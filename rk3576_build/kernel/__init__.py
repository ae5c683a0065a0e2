"""The kernel tree: git baseline, driver overlay, patch series, preflight."""
