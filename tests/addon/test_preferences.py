"""dreamtime_blender/preferences.py, installer.py and doctor.py: Test backend (ready, then the doctor), Install
backend (the torch build for the machine's GPU; stand-in commands)."""

from conftest import requires_bpy

pytestmark = requires_bpy


def scenario_test_backend_and_installer():
    import sys

    import bpy

    from in_blender import install_extension, pump_until

    addon = install_extension()
    prefs = addon.client.preferences()
    assert bpy.ops.dreamtime.test_backend() == {"FINISHED"}
    pump_until(addon.client, lambda: not addon.client.busy(), timeout=240)  # the ready, then the doctor (a short benchmark)
    ready, doctor = prefs.backend_status, prefs.doctor_lines

    installer = addon.installer
    commands = installer.commands(prefs.venv_dir())
    assert str(prefs.venv_dir()).startswith(bpy.utils.extension_path_user(addon.__name__))
    statuses = []
    steps = [("say hello", [sys.executable, "-c", "print('hello')"]),
             ("fail", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])]
    assert installer.start(steps, statuses.append) and not installer.start(steps, statuses.append)
    pump_until(installer, lambda: not installer.running(), timeout=30)
    failed = statuses[-1]
    installer.start(steps[:1], statuses.append)
    pump_until(installer, lambda: not installer.running(), timeout=30)
    return {"ready": ready, "doctor": doctor, "failed": failed, "ok": statuses[-1], "runs_dir": prefs.runs_dir(),
            "labels": [c[0] for c in commands if isinstance(c[0], str)]}


def scenario_install_picks_the_torch_build():
    import sys
    from pathlib import Path

    from in_blender import install_extension, pump_until

    addon = install_extension()
    installer = addon.installer
    venv = Path("/venv")
    smi = ["NVIDIA GeForce RTX 4090, 570.86.10, 24564 MiB"]
    builds = {}
    for system in ("Windows", "Linux", "Darwin"):
        for gpu in (smi, []):
            steps = installer.commands(venv, "/usr/bin/python3", system)
            outputs = {0: gpu} if system != "Darwin" else {}
            label, argv = next((s[0](outputs), s[1](outputs)) for s in steps if callable(s[1]))
            builds[f"{system} {'gpu' if gpu else 'none'}"] = {"label": label, "argv": argv, "first": steps[0][1][0],
                                                            "rest": steps[-2][1], "last": steps[-1][1]}
    # A whole install with stand-ins: nvidia-smi missing (an optional step), then one that prints a GPU.
    said = []
    stand_ins = [
        ("look for an NVIDIA GPU", ["/nonexistent/nvidia-smi"], True),
        ("look for an NVIDIA GPU", [sys.executable, "-c", f"print({smi[0]!r})"], True),
        (lambda outputs: installer.torch_step("py", "Windows", installer.nvidia_gpu(outputs.get(1, [])))[0],
         lambda outputs: [sys.executable, "-c", "print('installing')"]),
        ("check which device the backend uses", [sys.executable, "-c", "print('DEVICE 2.13.0+cu128 cuda NVIDIA GeForce RTX 4090')"]),
    ]
    assert installer.start(stand_ins, said.append)
    pump_until(installer, lambda: not installer.running(), timeout=60)
    return {"builds": builds, "said": said}


def test_test_backend_shows_ready_and_the_doctor_and_installer_reports_progress(blender):
    result = blender(__file__, "scenario_test_backend_and_installer")
    assert result["ready"].startswith("ready: protocol 1, device cpu") and "DREAMTIME_BACKEND_PYTHON" in result["ready"]
    # The doctor's answer, or, from a backend without the command, that it lacks it: never nothing.
    assert result["doctor"].startswith(("Device cpu", "Doctor: this backend has no doctor command")), result["doctor"]
    assert result["failed"].startswith("failed: fail (exit code 3)") and "boom" in result["failed"]
    assert result["ok"] == "installed" and result["runs_dir"].endswith("runs")
    assert result["labels"][-1] == "check which device the backend uses"


def test_install_backend_picks_a_cuda_torch_where_nvidia_smi_finds_a_gpu(blender):
    result = blender(__file__, "scenario_install_picks_the_torch_build")
    builds = result["builds"]
    cuda = "https://download.pytorch.org/whl/cu128"
    for system in ("Windows", "Linux"):
        assert cuda in builds[f"{system} gpu"]["argv"] and "RTX 4090" in builds[f"{system} gpu"]["label"]
        assert builds[f"{system} gpu"]["first"] == "nvidia-smi" and cuda not in builds[f"{system} none"]["argv"]
    assert "https://download.pytorch.org/whl/cpu" in builds["Linux none"]["argv"]  # not gigabytes of CUDA libraries for nothing
    assert "--index-url" not in builds["Windows none"]["argv"]  # Windows' default wheel is the CPU build
    for gpu in ("gpu", "none"):
        darwin = builds[f"Darwin {gpu}"]
        assert "--index-url" not in darwin["argv"] and "MPS" in darwin["label"] and darwin["first"] != "nvidia-smi"
    assert all(b["argv"][4].startswith("torch") for b in builds.values())  # the requirement's own torch spec
    assert all(not any(spec.startswith("torch") for spec in b["rest"][4:]) for b in builds.values())
    assert all("import torch" in b["last"][-1] for b in builds.values())
    said = result["said"]
    assert any("install torch with CUDA for the NVIDIA GeForce RTX 4090" in line for line in said), said
    assert said[-1] == "installed: torch 2.13.0+cu128, device cuda (NVIDIA GeForce RTX 4090)"
