"""build.py: the extension zip's contents, its bundled backend copy, and manifest validation."""

import os
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
import build  # noqa: E402

sys.path.remove(str(REPO))


def test_zip_has_the_addon_at_the_top_and_an_identical_backend_copy(extension_zip):
    assert extension_zip.name == f"dreamtime-{build.manifest()['version']}.zip"
    with zipfile.ZipFile(extension_zip) as archive:
        names = set(archive.namelist())
        assert {"blender_manifest.toml", "__init__.py", "client.py", "bundled/backend/__main__.py",
                "bundled/backend/serve/server.py"} <= names
        assert archive.read("blender_manifest.toml") == (REPO / "blender_manifest.toml").read_bytes()  # the one manifest, at the root
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        for source in REPO.joinpath("backend").rglob("*.py"):  # the copy the add-on imports is the backend's own file
            name = "bundled/" + source.relative_to(REPO).as_posix()
            assert archive.read(name) == source.read_bytes(), name
        requirements = archive.read("bundled/requirements.txt").decode()
    with open(REPO / "pyproject.toml", "rb") as handle:
        assert all(dep in requirements for dep in tomllib.load(handle)["project"]["dependencies"])


def test_zip_ships_the_addon_the_backend_package_and_nothing_else(extension_zip):
    """The add-on runs the backend as a program (`python -m backend serve`), so the whole package
    travels, every subcommand with it; tests, docs, scripts and build files stay home."""
    addon = {p.relative_to(REPO / "dreamtime_blender").as_posix() for p in (REPO / "dreamtime_blender").rglob("*") if p.is_file()}
    backend = {"bundled/" + p.relative_to(REPO).as_posix() for p in (REPO / "backend").rglob("*.py")}
    expected = {"blender_manifest.toml", "bundled/requirements.txt"} | addon | backend
    with zipfile.ZipFile(extension_zip) as archive:
        names = set(archive.namelist())
    assert names == {n for n in expected if "__pycache__" not in n and not n.endswith(".pyc")}
    assert {"bundled/backend/bench/step.py", "bundled/backend/cluster/batch.py", "bundled/backend/guidance/targets.py"} <= names


def test_the_manifest_lives_only_at_the_top_level():
    found = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name != "dist"]  # venvs, git, builds
        found += [Path(folder, name).relative_to(REPO).as_posix() for name in names if name == "blender_manifest.toml"]
    assert found == ["blender_manifest.toml"]


def test_built_zip_passes_the_validator(extension_zip):
    message = build.validate(extension_zip)
    if build.blender_validator() is not None:
        assert message.startswith("Blender's validator")


@pytest.mark.parametrize("change, words", [
    ({"tags": ["3D View", "Magic"]}, "unknown tag 'Magic'"),
    ({"permissions": {"files": "Reads files."}}, "trailing period"),
    ({"permissions": {"gpu": "Uses the GPU"}}, "unknown permission 'gpu'"),
    ({"license": ["GPL-3.0-or-later"]}, "SPDX:"),
    ({"blender_version_min": "4.2"}, "MAJOR.MINOR.PATCH"),
])
def test_manifest_checks_name_the_problem(change, words):
    assert build.check_manifest(build.manifest()) == []
    assert any(words in problem for problem in build.check_manifest({**build.manifest(), **change}))


def test_blender_validator_rejects_a_bad_tag(tmp_path):
    if build.blender_validator() is None:
        pytest.skip("no Blender validator here")
    import subprocess

    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "blender_manifest.toml").write_text(
        (REPO / "blender_manifest.toml").read_text().replace('"Mesh"', '"Magic"')
    )
    result = subprocess.run([*build.blender_validator(), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "Magic" in result.stdout + result.stderr
