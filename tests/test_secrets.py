"""Credentials in a source URL never reach what the CLI prints about tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret-pw-41"


def test_info_list_and_plan_never_print_url_credentials(tmp_path):
    env = {**os.environ, "DEMO_SOURCES_URL": f"http://bob:{SECRET}@127.0.0.1:9/src",
           "RK3576_WORKDIR": str(tmp_path / "work")}
    outputs = []
    for args in (["info", "fetch:sdk"], ["info", "fetch:driver"], ["list", "--all"], ["plan"]):
        done = subprocess.run([sys.executable, "-m", "rk3576_build.cli", "--recipe",
                               str(REPO / "recipes" / "demo.yaml"), *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        outputs.append(done.stdout + done.stderr)
        assert "Traceback" not in outputs[-1], outputs[-1]
    assert any("127.0.0.1:9" in out for out in outputs)  # the URL itself is shown, redacted
    for out in outputs:
        assert SECRET not in out
