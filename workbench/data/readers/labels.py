"""Labels tables (CSV/TSV) for readers of unlabelled formats (``generic``, ``csv``).

A table has a ``file`` column (file name, path relative to the dataset folder, or stem) and
either ``label`` (one class per recording) or ``onset``, ``duration``, ``label`` (labelled
events, seconds; optional ``description``). Rows naming no file and events outside their
recording are reported (:func:`table_problems`), never ignored silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..recording import make_events


def load_labels(labels: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(labels, pd.DataFrame):
        table = labels.copy()
    else:
        p = Path(labels)
        sep = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
        try:
            table = pd.read_csv(p, sep=sep)
        except Exception as e:
            raise ValueError(f"{p}: cannot read the labels table ({e}).") from e
    if "file" not in table.columns or "label" not in table.columns:
        raise ValueError(f"labels table needs the columns 'file' and 'label'; it has "
                         f"{list(table.columns)}.")
    return table


def rows_for(table: pd.DataFrame, file: Path) -> pd.DataFrame:
    keys = table["file"].astype(str)
    stem = file.name.split(".")[0]
    posix = file.as_posix()

    def match(k: str) -> bool:
        k = k.replace("\\", "/").lstrip("./")
        return k in (file.name, stem) or ("/" in k and posix.endswith("/" + k))

    hit = keys.map(match)
    return table[hit.to_numpy()]


def label_rows(table: pd.DataFrame, file: Path, duration: float | None = None
               ) -> tuple[int | None, pd.DataFrame | None, list[str]]:
    """The recording label or the events a labels table gives ``file``, and its problems.

    Returns ``(label, events, problems)``; ``problems`` names events that start after the
    recording (left out) or run past its end (clipped by the windowing) when ``duration`` is
    known. Raises ``ValueError`` naming the file when the table has no row for it.
    """
    rows = rows_for(table, file)
    if rows.empty:
        raise ValueError(f"{file}: no row for this file in the labels table.")
    if "onset" not in rows.columns:
        if len(rows) != 1:
            raise ValueError(f"{file}: {len(rows)} rows in the labels table, expected one "
                             "recording label.")
        return int(rows["label"].iloc[0]), None, []
    dur = rows["duration"] if "duration" in rows.columns else 0.0
    desc = rows["description"].astype(str).tolist() if "description" in rows.columns else None
    events = make_events(rows["onset"], dur, rows["label"], desc)
    problems = []
    if duration is not None:
        end = events["onset"] + events["duration"]
        after = int((events["onset"] >= duration).sum())
        past = int(((end > duration) & (events["onset"] < duration)).sum())
        if after:
            problems.append(f"{after} labels-table events start after the end of the recording "
                            f"({duration:g} s): no window")
        if past:
            problems.append(f"{past} labels-table events run past the end of the recording "
                            f"({duration:g} s): clipped")
    return None, events, problems



def table_problems(path: str | Path, labels: str | Path | pd.DataFrame, files: list[Path],
                   duration_of: Callable[[Path], float] | None = None
                   ) -> list[tuple[str, str]]:
    """``(file, message)`` for every table row that names none of ``files`` and, when
    ``duration_of(file)`` (seconds) is given, every file whose events lie outside it."""
    table = load_labels(labels)
    matched = np.zeros(len(table), bool)
    out = []
    for f in files:
        hit = rows_for(table, f).index
        matched[table.index.get_indexer(hit)] = True
        if duration_of is not None and len(hit):
            try:
                out += [(str(f), m) for m in label_rows(table, f, duration_of(f))[2]]
            except ValueError as e:
                out.append((str(f), str(e)))
    for k in sorted(set(table.loc[~matched, "file"].astype(str))):
        out.append((k, f"labels-table rows name {k!r}, which matches no file under {path}"))
    return out
