"""The README's walkthrough (``make demo``) runs end to end, twice (it must be re-runnable)."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "examples" / "walkthrough.sh"


def test_walkthrough_runs_and_reruns(tmp_path):
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("PKIQ_DATABASE_URL", "PKIQ_CA_PASSPHRASE", "PKIQ_CA_PASSPHRASE_FILE"):
        env.pop(name, None)
    for _ in range(2):
        run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "certificate revoked" in run.stdout + run.stderr
    assert "=Valid (V)" in run.stdout
    # the guide's cluster request decoded in full: its SANs and EKUs, not a cut-off head
    assert "DNS:expe.example.com, DNS:expe1.example.com, DNS:expe2.example.com" in run.stdout
    assert "serverAuth, clientAuth" in run.stdout
