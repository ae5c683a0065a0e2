"""rk3576-build: reproducible RK3576 firmware builds with an RKNPU driver upgrade."""

__version__ = "0.1.0"
