"""scripts/mesh_picture.py on a run without a mesh: one line saying so, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_run_without_a_mesh_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "mesh_picture.py"), str(tmp_path / "run"), str(tmp_path / "out.png")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and result.stdout == ""
    expected = f"error: no {tmp_path / 'run' / 'mesh.glb'}: the run ended without a mesh (see its log.txt)"
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "out.png").exists()
