"""The contact sheet of a batch: one labelled cell per job, prompts down, seeds across (PNG); or of
variations (variations.py): the cells in reading order, `columns` across."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CELL = 160  # pixels per side of a preview cell
CAPTION = 30  # pixels of text under each cell
FAILED_GREY = (120, 120, 120)
TRAINED = ("done", "no_mesh")  # statuses of a job that trained to the end, with a mesh or without one


def contact_sheet(records: list[dict[str, Any]], path: str | Path, columns: int | None = None) -> Path:
    """Write the final previews of `records` (index.json's jobs) as a grid; failed jobs in grey.
    With `columns`, cell k sits at row k // columns, column k % columns; a record's `label`, where
    it has one, is its caption's first line instead of the prompt."""
    from PIL import Image, ImageDraw, ImageFont

    from ..run_folder import atomic_path

    prompts = list(dict.fromkeys(record["prompt"] for record in records))
    seeds = sorted({record["seed"] for record in records})
    if columns:
        cells = [divmod(k, columns) for k in range(len(records))]  # (row, column)
        shape = (min(columns, max(len(records), 1)), max(-(-len(records) // columns), 1))
    else:
        cells = [(prompts.index(record["prompt"]), seeds.index(record["seed"])) for record in records]
        shape = (max(len(seeds), 1), max(len(prompts), 1))
    sheet = Image.new("RGB", (shape[0] * CELL, shape[1] * (CELL + CAPTION)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for record, (row, column) in zip(records, cells):
        x, y = column * CELL, row * (CELL + CAPTION)
        cell = _preview(record)
        if cell is None:
            draw.rectangle((x + 2, y + 2, x + CELL - 3, y + CELL - 3), fill=FAILED_GREY)
            _text(draw, (x + 8, y + CELL // 2 - 6), record["status"].upper(), font, "white")
        else:
            sheet.paste(cell, (x, y))
        quality = record.get("quality") or {}
        detail = f"seed {record['seed']}" + (f"  {quality['psnr']:.1f} dB" if "psnr" in quality else "")
        _text(draw, (x + 4, y + CELL + 2), _fit(record.get("label") or record["prompt"], CELL), font)
        _text(draw, (x + 4, y + CELL + 15), detail if cell is not None else _fit(record.get("error") or detail, CELL), font)
    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return Path(path)


def _preview(record: dict[str, Any]):
    """The job's final preview scaled to the cell, or None (failed, or no readable preview)."""
    from PIL import Image

    if record["status"] not in TRAINED or not record.get("preview"):  # no_mesh: its preview is what it reached
        return None
    try:
        with Image.open(record["preview"]) as image:
            return image.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST if image.width < CELL else Image.Resampling.LANCZOS)
    except OSError:
        return None


def _fit(text: str, width: int) -> str:
    """One line of text cut to about `width` pixels of the default 6-pixel font."""
    text, chars = " ".join(text.split()), max(width // 6 - 1, 4)
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _text(draw, xy: tuple[int, int], text: str, font, fill: str = "black") -> None:
    try:
        draw.text(xy, text, fill=fill, font=font)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font is Latin-1 only
        draw.text(xy, text.encode("ascii", "replace").decode("ascii"), fill=fill, font=font)
