"""Refine: push a finished run further (`generate --resume RUN_DIR --steps M`, config `refine_from`).

The run's own config.json with `steps` = M, in a new folder beside it (`<run>-refine-<M>`, made
here with a copy of its checkpoint), then an ordinary resume there. The schedule is laid out again
for M steps and the refine trains i = n .. M-1 of it, n being the steps the run has done
(schedule.py: `start_step`): the run's n steps stand for the first n of M, so the result has taken
M steps in all, as a straight M-step run does, and a refine is `strength` (M - n)/M on the finished
field. t jumps back up at the start, from t_n(n-1) to t_M(n) (TP-SDS, 300 to 700 steps: 326 to
860), then falls again over more steps. Matching t instead (continuing from the step of the
M-step schedule whose t equals the t the run ended at) would leave about M/n steps: every length
of t(i) ends at about the same small t.

A refine is a new phase of the optimization, so it starts as one: the learning rate decays again
from its full value over steps n..M-1 (schedule.lr_factor), and Adam starts afresh (the source's
moments were gradient statistics of its last, small-t steps; the SDF switch restarts Adam for the
same reason). Measured on "a blue torus" 300 -> 700 (a straight 700-step run: 45.85 dB): with
neither 37.5 dB, the full rate alone 41.2, fresh moments alone 40.5, both 44.8.

Nothing of the existing run is written: a refine that fails (a bad M, a run without a checkpoint,
an error mid-way) leaves the run folder as it was; the refine's own folder keeps what it reached
and `--resume` on it goes on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME
from .config import ConfigError, GenerationConfig
from .run_folder import atomic_path, atomic_write_text, fresh_dir


def steps_done(run_dir: Path) -> int:
    """The step of a run folder's checkpoint; ConfigError("refine_from", ...) without a readable one."""
    import torch

    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError("refine_from", f"no {CHECKPOINT_NAME} in {run_dir}: only a run with a checkpoint can be refined")
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["step"])
    except Exception as exc:  # truncated or foreign: say so, never a traceback
        raise ConfigError("refine_from", f"{path} is unreadable ({type(exc).__name__}: {exc})") from None


def run_config(run_dir: Path) -> GenerationConfig:
    """A run folder's config.json; ConfigError("refine_from", ...) if it has none that reads."""
    try:
        return GenerationConfig.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))).validate()
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError("refine_from", f"cannot refine {run_dir}: no readable config.json ({exc})") from None


def check_refine(run_dir: str | Path, steps: int) -> tuple[GenerationConfig, int]:
    """The run's config and the steps it has done, if it can be refined to `steps`; else ConfigError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError("refine_from", f"no run folder at {run_dir}")
    if (run_dir / "variations.json").is_file():  # cluster/variations.py's INDEX_NAME: N runs, one per seed
        seed = min((p.name for p in run_dir.glob("s*") if (p / CHECKPOINT_NAME).is_file()), default="s0")
        raise ConfigError("refine_from", f"{run_dir.name} is a variations run: refine one of its seeds, e.g. {run_dir / seed}")
    config, done = run_config(run_dir), steps_done(run_dir)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= done:
        raise ConfigError("steps", f"a refine must go past the {done} steps {run_dir.name} has done; got {steps!r}")
    return config, done


def prepare_refine(run_dir: str | Path, steps: int) -> GenerationConfig:
    """Make the refine's folder (config.json, a copy of the checkpoint); returns its config (run it with resume)."""
    run_dir = Path(run_dir).resolve()
    config, done = check_refine(run_dir, steps)
    # init_mesh and strength did their part at the run's start (its frame is in the checkpoint's metrics)
    config = config.replace(steps=steps, variations=1, refine_from=str(run_dir), init_mesh="", strength=1.0,
                            run_dir=str(new_refine_dir(run_dir, steps))).validate()
    target = Path(config.run_dir)
    with atomic_path(target / CHECKPOINT_NAME) as tmp:
        shutil.copyfile(run_dir / CHECKPOINT_NAME, tmp)
    atomic_write_text(target / "config.json", config.to_json())
    return config


def new_refine_dir(run_dir: Path, steps: int) -> Path:
    """A new folder `<run>-refine-<steps>[-n]` beside the run."""
    return fresh_dir(run_dir.with_name(f"{run_dir.name}-refine-{steps}"))
