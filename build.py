"""Build the Blender extension: `python build.py` -> dist/dreamtime-<version>.zip.

The zip holds the manifest (the repository's top-level blender_manifest.toml, written into the zip's
root), the add-on (dreamtime_blender/, at the zip's root too) and, under `bundled/`, the
backend sources it launches (`bundled/backend/`) with their requirements (`bundled/requirements.txt`,
read from pyproject.toml). It is then checked with Blender's own extension validator when one is
available — a `blender` binary (`blender --command extension validate`) or the `bpy` module's
bundled copy of that command (`bl_pkg/cli/blender_ext.py`, runnable without Blender) — else with
the manifest checks below.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON = REPO / "dreamtime_blender"
BACKEND = REPO / "backend"
MANIFEST = REPO / "blender_manifest.toml"  # the one manifest; the zip's root gets it
SKIP = re.compile(r"(^|/)(__pycache__|\.[^/]*)(/|$)|\.pyc$")
# Blender's add-on tags (bl_pkg's tag list) and permission names, for the fallback check.
ADDON_TAGS = {
    "3D View", "Add Curve", "Add Mesh", "Animation", "Bake", "Camera", "Compositing", "Development", "Game Engine",
    "Geometry Nodes", "Grease Pencil", "Import-Export", "Lighting", "Material", "Modeling", "Mesh", "Node", "Object",
    "Paint", "Pipeline", "Physics", "Render", "Rigging", "Scene", "Sculpt", "Sequencer", "System", "Text Editor",
    "Tracking", "User Interface", "UV",
}
PERMISSIONS = {"files", "network", "clipboard", "camera", "microphone"}


def manifest() -> dict:
    with open(MANIFEST, "rb") as handle:
        return tomllib.load(handle)


def requirements() -> str:
    with open(REPO / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return "# The backend's requirements (from pyproject.toml), installed by 'Install backend'.\n" + "\n".join(dependencies) + "\n"


def files() -> list[tuple[Path, str]]:
    """(source file, name in the zip) for everything the extension ships."""
    entries = [(MANIFEST, MANIFEST.name)]
    entries += [(p, p.relative_to(ADDON).as_posix()) for p in sorted(ADDON.rglob("*")) if p.is_file()]
    entries += [(p, "bundled/" + p.relative_to(REPO).as_posix()) for p in sorted(BACKEND.rglob("*.py"))]
    return [(path, name) for path, name in entries if not SKIP.search(name)]


def build(out_dir: Path) -> Path:
    version = manifest()["version"]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"dreamtime-{version}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files():
            archive.write(path, name)
        archive.writestr("bundled/requirements.txt", requirements())
    tmp.replace(target)
    return target


def blender_validator() -> list[str] | None:
    """The command prefix of Blender's extension validator, or None if there is none here."""
    blender = shutil.which("blender")
    if blender:
        return [blender, "--factory-startup", "--command", "extension", "validate"]
    spec = importlib.util.find_spec("bpy")
    for folder in spec.submodule_search_locations or [] if spec else []:
        for script in sorted(Path(folder).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")):
            tags = script.parents[3] / "modules/_bpy_internal/extensions/tags.py"  # what `blender` passes
            return [sys.executable, str(script), "validate", *([f"--valid-tags={tags}"] if tags.is_file() else [])]
    return None


def check_manifest(data: dict) -> list[str]:
    """The manifest rules this script can check without Blender; a list of problems."""
    problems = []
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min", "license"):
        if not isinstance(data.get(key), (str, list)) or not data.get(key):
            problems.append(f"missing or empty: {key}")
    if data.get("schema_version") != "1.0.0":
        problems.append("schema_version must be 1.0.0")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(data.get("id", ""))):
        problems.append("id must be an identifier")
    for key in ("version", "blender_version_min"):
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(data.get(key, ""))):
            problems.append(f"{key} must be MAJOR.MINOR.PATCH")
    if data.get("type") != "add-on":
        problems.append("type must be add-on")
    if not all(str(item).startswith("SPDX:") for item in data.get("license", [])):
        problems.append("license entries must start with SPDX:")
    if len(str(data.get("tagline", ""))) > 64 or str(data.get("tagline", "")).endswith("."):
        problems.append("tagline: at most 64 characters, no trailing period")
    problems += [f"unknown tag {tag!r}" for tag in data.get("tags", []) if tag not in ADDON_TAGS]
    for name, reason in data.get("permissions", {}).items():
        if name not in PERMISSIONS:
            problems.append(f"unknown permission {name!r}")
        if not isinstance(reason, str) or not reason or len(reason) > 64 or reason.endswith("."):
            problems.append(f"permission {name}: the reason must be 1-64 characters without a trailing period")
    return problems


def validate(zip_path: Path) -> str:
    """Raise SystemExit with the validator's words if the zip is not a valid extension."""
    problems = check_manifest(manifest())
    if problems:
        raise SystemExit("manifest: " + "; ".join(problems))
    command = blender_validator()
    if command is None:
        return "manifest checks passed (no Blender validator available)"
    result = subprocess.run([*command, str(zip_path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or "error" in result.stdout.lower():
        raise SystemExit(f"Blender's validator rejected {zip_path}:\n{result.stdout}{result.stderr}")
    return f"Blender's validator: {result.stdout.strip() or 'ok'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="folder for the zip (default: dist/)")
    parser.add_argument("--no-validate", action="store_true", help="skip validation")
    args = parser.parse_args(argv)
    target = build(args.out)
    if not args.no_validate:
        print(validate(target), file=sys.stderr)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
