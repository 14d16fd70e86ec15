"""README.md: every local file it links or shows is in the repository (CI runs on a clean clone)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_local_link_of_the_readme_exists():
    text = (ROOT / "README.md").read_text()
    targets = {m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in m and not m.startswith("#")}
    assert targets  # the README does link its pictures and results
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, missing
