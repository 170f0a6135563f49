"""Result tables as CSV files: the one writer and reader for runs, callbacks and reports (no Lightning)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

INTEGER_COLUMNS = ("nfe_budget", "nfe_used", "n_samples", "seed")


def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV with the union of keys as columns (atomic replace: a reader never sees half a file)."""
    path = Path(path)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_rows(path: Path, text: tuple[str, ...] = ("gmm", "diffusion", "sampler", "config")) -> list[dict]:
    """The rows of a CSV written by ``write_rows``: ``INTEGER_COLUMNS`` as int, the ``text`` columns and empty
    cells as written, every other cell as float."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key, value in r.items():
            if key in text or value == "":
                continue
            r[key] = int(float(value)) if key in INTEGER_COLUMNS else float(value)
    return rows
