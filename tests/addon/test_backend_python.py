"""dreamtime_blender/backend_python.py: which Python runs the backend (docs/ARCHITECTURE.md §10 order)."""

import sys

from conftest import load_by_path

backend_python = load_by_path("dreamtime_blender/backend_python.py")


def test_first_match_wins(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    backend_python.venv_python(venv).parent.mkdir(parents=True)
    backend_python.venv_python(venv).write_text("")
    monkeypatch.setenv("DREAMTIME_BACKEND_PYTHON", "/env/python")
    assert backend_python.find_python("  /pref/python ", venv) == ("/pref/python", "preference")
    assert backend_python.find_python("", venv) == ("/env/python", "DREAMTIME_BACKEND_PYTHON")
    monkeypatch.delenv("DREAMTIME_BACKEND_PYTHON")
    assert backend_python.find_python("", venv) == (str(backend_python.venv_python(venv)), "installed backend")
    if backend_python.importlib.util.find_spec("torch") is not None:  # the running Python, when it has torch
        assert backend_python.find_python("", tmp_path / "no-venv") == (sys.executable, "Blender's Python")


def test_none_found_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("DREAMTIME_BACKEND_PYTHON", raising=False)
    monkeypatch.setattr(backend_python.importlib.util, "find_spec", lambda name: None)
    assert backend_python.find_python("", tmp_path) == (None, "none")
    assert "Install backend" in backend_python.HOW_TO_INSTALL
