"""`python -m rk3576_build.cli`: the same as the rk3576-build command."""

from rk3576_build.cli.main import main

raise SystemExit(main())
