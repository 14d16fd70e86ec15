"""`python -m backend bench report BENCH_JSON`: bench.json as Markdown tables (for the README).

One table of the schedules' means (quality, consistency, steps-to-quality at the three
thresholds with how many runs reached each, diversity, Chamfer) and one of the per-prompt
thresholds and values, so every number in the README can be traced to a bench.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def schedules_table(bench: dict[str, Any]) -> str:
    runs_per = {label: s["runs"] for label, s in bench["schedules"].items()}
    lines = [
        "| schedule | quality (dB) | consistency | steps to 25 / 50 / 75 % (reached of runs) "
        "| diversity (distinct targets, entropy bits) | Chamfer / diag |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, s in bench["schedules"].items():
        steps = " / ".join(f"{_fmt(v, 0)} ({r}/{runs_per[label]})" for v, r in zip(s["steps_to_quality"], s["reached"]))
        lines.append(f"| {label} | {_fmt(s['quality_db'])} | {_fmt(s['consistency'])} | {steps} | "
                     f"{_fmt(s['diversity_distinct'])}, {_fmt(s['diversity_entropy_bits'])} | {_fmt(s['chamfer_rel'], 3)} |")
    return "\n".join(lines)


def prompts_table(bench: dict[str, Any]) -> str:
    labels = list(bench["schedules"])
    lines = [
        "| prompt | kind | thresholds (dB) | " + " | ".join(f"{label}: dB, consistency, distinct" for label in labels) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    first = bench["schedules"][labels[0]]["per_prompt"]
    for entry, values in first.items():
        cells = []
        for label in labels:
            p = bench["schedules"][label]["per_prompt"][entry]
            cells.append(f"{_fmt(p['quality_db'], 1)}, {_fmt(p['consistency'])}, {p['diversity']['distinct']}")
        bars = " / ".join(_fmt(b, 1) for b in values["thresholds_db"])
        lines.append(f"| {entry} | {values['kind']} | {bars} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_table(bench: dict[str, Any]) -> str:
    return "\n".join(["| ratio | value |", "| --- | --- |"] + [f"| {k} | {_fmt(v, 3)} |" for k, v in bench["ratios"].items()])


def clip_table(bench: dict[str, Any]) -> str:
    """sd benches scored with --clip: the final CLIP numbers per schedule, then per prompt."""
    lines = [
        (f"CLIP `{bench.get('clip')}`; R@1 among the suite's {len(bench['entries'])} prompts (chance "
         f"{1 / len(bench['entries']):.2f}); diversity: mean pairwise cosine distance of the final views across seeds"),
        "",
        "| schedule | R@1 | CLIP score | diversity | final loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, s in bench["schedules"].items():
        lines.append(f"| {label} | {_fmt(s.get('r_precision'))} | {_fmt(s.get('clip_score'), 1)} | {_fmt(s.get('clip_diversity'), 3)} | "
                     f"{_fmt(s.get('final_loss'), 4)} |")
    labels = list(bench["schedules"])
    lines += ["", "| prompt | " + " | ".join(f"{label}: R@1, CLIP score, diversity" for label in labels) + " |",
              "| --- | " + " | ".join("---" for _ in labels) + " |"]
    for entry in bench["entries"]:
        cells = []
        for label in labels:
            p = bench["schedules"][label].get("per_prompt", {}).get(entry["name"], {})
            cells.append(f"{_fmt(p.get('r_precision'))}, {_fmt(p.get('clip_score'), 1)}, {_fmt(p.get('diversity'), 3)}")
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(path: str | Path) -> str:
    bench = json.loads(Path(path).read_text(encoding="utf-8"))
    if not all("quality_db" in s for s in bench["schedules"].values()):
        if bench.get("clip"):
            head = (f"suite `{bench['suite']}` (sd), {bench['steps']} steps, {bench['seeds']} seeds; "
                    f"{len(bench['runs'])} runs in {bench['wall_s'] / 60:.1f} min")
            return "\n\n".join([head, clip_table(bench)] + ([ratios_table(bench)] if bench.get("ratios") else [])) + "\n"
        return "no analytic quality in this bench (guidance without known targets): see its plots\n"
    head = (f"suite `{bench['suite']}`, {bench['steps']} steps, {bench['seeds']} seeds, evaluated every "
            f"{bench['eval_every']} steps; {len(bench['runs'])} runs in {bench['wall_s'] / 60:.1f} min ({bench['jobs']} jobs)")
    tables = [head, schedules_table(bench), prompts_table(bench)] + ([ratios_table(bench)] if bench.get("ratios") else [])
    return "\n\n".join(tables) + "\n"


def run_cli(args) -> int:
    print(report(args.bench_json), end="")
    return 0
