"""A variations run in the panel (backend/cluster/variations.py): its contact sheet and the meshes to import."""

from __future__ import annotations

import json

SHEET = "variations.png"  # the backend's contact sheet: its preview event goes to IMAGE_NAME
IMAGE_NAME = "DreamTime Variations"
TRAINED = ("done", "no_mesh")  # a take that trained to the end (with a mesh or without): it can be refined


def store(props, outputs: dict, local_copies: dict) -> None:
    """Keep a variations run's end for the Variations panel: seed, label, PSNR, status, the mesh as this
    machine has it (`local_copies`: a remote backend's files, copied here), and what a Refine of one
    needs: its run folder as the backend names it (a remote one's relative to its output root),
    its prompt and the steps it has done."""
    rows = [{"seed": v["seed"], "label": v.get("label", ""), "psnr": (v.get("quality") or {}).get("psnr"), "status": v["status"],
             "mesh": local_copies.get(v["mesh"], v["mesh"]) if v.get("mesh") else None, "run_dir": v.get("run_dir", ""),
             "prompt": v.get("prompt", ""), "steps_done": v.get("steps_done", 0)} for v in outputs["variations"]]
    props.variations_json, props.variations_summary = json.dumps(rows), outputs.get("summary", "")
    props.status = f"{props.status}; {outputs.get('summary', '')}"


def rows(props) -> list[dict]:
    return json.loads(props.variations_json or "[]")
