"""backend/wording.py's panel half, in Blender: every place a panel hint names (PANEL_PLACES, Extra
Config, the choice labels) is a field the panel or the preferences draw, with that label, in that
sub-panel. The flag half: tests/backend/test_wording.py."""

from conftest import requires_bpy

pytestmark = requires_bpy

PROPERTY = {"out": "output_folder"}  # config field -> the preferences property that sets it, where the names differ


def scenario_every_panel_place_is_drawn_with_its_label():
    import bpy
    from test_panels import Drawn, Recorder

    from in_blender import install_extension

    addon = install_extension()
    wording = addon.backend_link.wording
    props, prefs = bpy.context.scene.dreamtime, addon.client.preferences()
    sections = {wording.MAIN: addon.panels.DREAMTIME_PT_main, wording.ADVANCED: addon.panels.DREAMTIME_PT_advanced,
                wording.SCHEDULE: addon.panels.DREAMTIME_PT_schedule}
    drawn = {}
    for section, panel in sections.items():
        log, problems = [], []
        panel.draw(Drawn(None, Recorder(log, problems)), bpy.context)
        drawn[section] = {args["property"] for name, args in log if name == "prop" and "property" in args}
    log = []
    addon.preferences.DreamTimePreferences.draw(Drawn(prefs, Recorder(log, [])), bpy.context)
    drawn[wording.PREFERENCES] = {args["property"] for name, args in log if name == "prop" and "property" in args}
    wrong = []
    for field, (section, label) in [*wording.PANEL_PLACES.items(), ("overrides", wording.EXTRA_CONFIG)]:
        owner = prefs if section == wording.PREFERENCES else props
        prop = PROPERTY.get(field, field)
        if prop not in drawn[section]:
            wrong.append(f"{field}: not drawn in {section or 'the main panel'!r}")
        elif owner.bl_rna.properties[prop].name != label:
            wrong.append(f"{field}: labelled {owner.bl_rna.properties[prop].name!r}, wording says {label!r}")
    for field, labels in wording.VALUE_LABELS.items():
        owner = prefs if wording.PANEL_PLACES[field][0] == wording.PREFERENCES else props
        items = {item.identifier: item.name for item in owner.bl_rna.properties[field].enum_items}
        if items != labels:
            wrong.append(f"{field}: items {items}, wording says {labels}")
    return {"wrong": wrong, "places": len(wording.PANEL_PLACES)}


def test_every_panel_field_a_hint_names_exists_with_that_label(blender):
    result = blender(__file__, "scenario_every_panel_place_is_drawn_with_its_label")
    assert result["wrong"] == [] and result["places"] > 15
