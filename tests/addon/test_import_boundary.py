"""STYLE 1: the add-on imports and registers with torch blocked; the backend imports with bpy blocked."""

import subprocess
import sys

from conftest import BACKEND_PYTHON, REPO, requires_bpy


@requires_bpy
def scenario_register_with_torch_blocked():
    import bpy  # addon_utils comes with bpy
    # isort: split
    import addon_utils

    from in_blender import install_extension

    addon = install_extension()  # in_blender.py set sys.modules["torch"] = None before anything
    assert sys.modules["torch"] is None and not [m for m in sys.modules if m.startswith("torch.")]
    props = bpy.context.scene.dreamtime
    config = addon.backend_link.config
    fields = {f.name for f in config.dataclasses.fields(config.GenerationConfig)}
    values = props.check(addon.client.preferences())
    assert set(values) <= fields and values["prompt"] == "a red torus"
    registered = [cls.__name__ for cls in addon.classes]
    assert all(hasattr(bpy.types, name) for name in ("DREAMTIME_PT_main", "DREAMTIME_OT_generate"))
    assert bpy.ops.dreamtime.generate.idname() == "DREAMTIME_OT_generate"
    addon_utils.disable(addon.__name__)
    assert not hasattr(bpy.types.Scene, "dreamtime") and not hasattr(bpy.types, "DREAMTIME_PT_main")
    assert addon.preview._handle is None
    return {"classes": registered}


@requires_bpy
def scenario_dev_checkout_enables_too():
    import bpy  # addon_utils comes with bpy
    # isort: split
    import addon_utils

    sys.path.insert(0, str(REPO))
    module = addon_utils.enable("dreamtime_blender", default_set=True, handle_error=None)
    assert module is not None and sys.modules["torch"] is None
    assert module.backend_link.backend_root() == REPO
    assert bpy.context.scene.dreamtime.check() == {"prompt": "a red torus"}  # the rest: the backend's defaults and preset
    addon_utils.disable("dreamtime_blender")
    return {}


@requires_bpy
def test_addon_registers_with_torch_blocked(blender):
    result = blender(__file__, "scenario_register_with_torch_blocked")
    assert result["classes"][:2] == ["DreamTimeRun", "DreamTimeProperties"]  # items before the group that holds them


@requires_bpy
def test_dev_checkout_layout(blender):
    blender(__file__, "scenario_dev_checkout_enables_too")


def test_backend_imports_with_bpy_blocked():
    code = "import sys; sys.modules['bpy'] = None; import backend.serve.server, backend.trainer, backend.cli; print('ok')"
    result = subprocess.run([BACKEND_PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


def test_protocol_config_schedule_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import backend.protocol, backend.config, backend.schedule; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'bpy')))")
    result = subprocess.run([BACKEND_PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['torch']", result.stderr
