"""A variations run in the panel (backend/cluster/variations.py): its contact sheet and the meshes to import."""

from __future__ import annotations

import json

SHEET = "variations.png"  # the backend's contact sheet: its preview event goes to IMAGE_NAME
IMAGE_NAME = "DreamTime Variations"


def store(props, outputs: dict, local_copies: dict) -> None:
    """Keep a variations run's end for the Variations panel: seed, label, PSNR, status and the mesh as this
    machine has it (`local_copies`: a remote backend's files, copied here)."""
    rows = [{"seed": v["seed"], "label": v.get("label", ""), "psnr": (v.get("quality") or {}).get("psnr"), "status": v["status"],
             "mesh": local_copies.get(v["mesh"], v["mesh"]) if v.get("mesh") else None} for v in outputs["variations"]]
    props.variations_json, props.variations_summary = json.dumps(rows), outputs.get("summary", "")
    props.status = f"{props.status}; {outputs.get('summary', '')}"


def rows(props) -> list[dict]:
    return json.loads(props.variations_json or "[]")
