"""The plots of `bench convergence` (issue 5), drawn from bench.json's dict with matplotlib.

quality.png          PSNR vs step per schedule: median over seeds, band from min to max; one panel per prompt
clip.png             sd with --clip: CLIP R@1 and CLIP score vs step, the same way
schedules.png        t(i) of each schedule
diversity.png        per multi-modal prompt, how many seeds ended at each target, per schedule
final_renders.png    the final evaluation render (first ring view) of every schedule x prompt x seed
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..run_folder import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _runs(bench: dict[str, Any], label: str, entry: str) -> list[dict[str, Any]]:
    return [r for r in bench["runs"] if r["label"] == label and r["entry"] == entry]


def quality_curves(bench: dict[str, Any], path: Path) -> Path | None:
    entries = [e["name"] for e in bench["entries"]]
    if not any(r.get("psnr") for r in bench["runs"]):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(entries), figsize=(4.2 * len(entries), 3.4), squeeze=False)
    for ax, entry in zip(axes[0], entries):
        for label in bench["variants"]:
            runs = _runs(bench, label, entry)
            if not runs:
                continue
            steps = np.array(runs[0]["eval_steps"])
            curves = np.array([r["psnr"] for r in runs])  # (seeds, evals)
            line, = ax.plot(steps, np.median(curves, 0), label=label)
            ax.fill_between(steps, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        bars = bench["schedules"].get(next(iter(bench["variants"])), {}).get("per_prompt", {}).get(entry, {}).get("thresholds_db", [])
        for bar in bars:
            ax.axhline(bar, color="grey", lw=0.6, ls=":")
        ax.set_title(entry)
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR vs best target (dB)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"quality vs step (median over {bench['seeds']} seeds, band: min..max; dotted: thresholds)")
    return _save(fig, path)


def clip_curves(bench: dict[str, Any], path: Path) -> Path | None:
    """R@1 and CLIP score vs step (sd benches with --clip): median over seeds, band min..max."""
    entries = [e["name"] for e in bench["entries"]]
    if not any(r.get("r_precision") for r in bench["runs"]):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(entries), figsize=(4.2 * len(entries), 6.4), squeeze=False)
    for column, entry in enumerate(entries):
        for row, (key, name) in enumerate((("r_precision", "CLIP R@1"), ("clip_score", "CLIP score"))):
            ax = axes[row][column]
            for label in bench["variants"]:
                runs = [r for r in _runs(bench, label, entry) if r.get(key)]
                if not runs:
                    continue
                curves = np.array([r[key] for r in runs])
                line, = ax.plot(runs[0]["eval_steps"], np.median(curves, 0), label=label)
                ax.fill_between(runs[0]["eval_steps"], curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
            ax.set_title(entry if row == 0 else "")
            ax.set_xlabel("step")
            ax.set_ylabel(name)
    chance = 1 / len(entries)
    for ax in axes[0]:
        ax.set_ylim(-0.05, 1.05)
        ax.axhline(chance, color="grey", lw=0.6, ls=":")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"CLIP vs step ({bench.get('clip')}; median over {bench['seeds']} seeds, band min..max; chance R@1 = {chance:.2f})")
    return _save(fig, path)


def schedule_curves(bench: dict[str, Any], path: Path) -> Path:
    from ..config import GenerationConfig
    from ..schedule import scaled_linear_alphas_cumprod, timesteps

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    base = bench["base_config"]
    for label, overrides in bench["variants"].items():
        cfg = {**GenerationConfig().to_dict(), **base, **overrides}
        t = timesteps(cfg["schedule"], bench["steps"], cfg["m1"], cfg["m2"], cfg["s1"], cfg["s2"], cfg["t_min"], cfg["t_max"], 0,
                      scaled_linear_alphas_cumprod(), cfg["use_w_d"])
        style = {"ls": "", "marker": ".", "ms": 2} if cfg["schedule"] == "uniform" else {}
        ax.plot(np.arange(len(t)), t, label=label, **style)
    ax.set_xlabel("step i")
    ax.set_ylabel("timestep t(i)")
    ax.legend(fontsize=7)
    ax.set_title("schedules (seed 0)")
    return _save(fig, path)


def diversity_bars(bench: dict[str, Any], path: Path) -> Path | None:
    multi = [e for e in bench["entries"] if e["kind"] not in ("control", "open")]
    if not multi or not any(r.get("quality") for r in bench["runs"]):
        return None
    plt = _pyplot()
    labels = list(bench["variants"])
    fig, axes = plt.subplots(1, len(multi), figsize=(4.5 * len(multi), 3.2), squeeze=False)
    width = 0.8 / len(labels)
    for ax, entry in zip(axes[0], multi):
        runs = [r for r in bench["runs"] if r["entry"] == entry["name"]]
        names = runs[0].get("target_names") or None
        k = len(names) if names else max(r["quality"]["best_target"] for r in runs) + 1
        for j, label in enumerate(labels):
            counts = np.bincount([r["quality"]["best_target"] for r in _runs(bench, label, entry["name"])], minlength=k)
            ax.bar(np.arange(k) + j * width, counts, width, label=label)
        ax.set_xticks(np.arange(k) + 0.4 - width / 2)
        ax.set_xticklabels(names or [str(i) for i in range(k)], rotation=45, fontsize=7, ha="right")
        ax.set_title(f"{entry['name']}: final best target")
        ax.set_ylabel("seeds")
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def final_renders(bench: dict[str, Any], path: Path) -> Path | None:
    from PIL import Image

    labels = list(bench["variants"])
    columns = [(e["name"], s) for e in bench["entries"] for s in range(bench["seeds"])]
    cells: dict[tuple, np.ndarray] = {}
    for run in bench["runs"]:
        ring = Path(run["run_dir"]) / "ring.png"
        if ring.exists():
            strip = np.asarray(Image.open(ring).convert("RGB"))
            cells[(run["label"], run["entry"], run["seed"])] = strip[:, : strip.shape[0]]  # first view
    if not cells:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(labels), len(columns), figsize=(1.1 * len(columns) + 0.8, 1.2 * len(labels) + 0.6), squeeze=False)
    for i, label in enumerate(labels):
        for j, (entry, seed) in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (label, entry, seed) in cells:
                ax.imshow(cells[(label, entry, seed)])
            if i == 0:
                ax.set_title(f"{entry}\nseed {seed}", fontsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    return _save(fig, path)


def write_all(bench: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = [
        quality_curves(bench, folder / "quality.png"),
        clip_curves(bench, folder / "clip.png"),
        schedule_curves(bench, folder / "schedules.png"),
        diversity_bars(bench, folder / "diversity.png"),
        final_renders(bench, folder / "final_renders.png"),
    ]
    return [p for p in made if p is not None]
