"""Run folders: where a pre-training or fine-tuning run lives, keyed by what determines it.

A run is identified by its *settings* (method, model and objective spec, data, schedule, seed,
the pre-trained checkpoint's digest, protocol, mode ...). :class:`RunLayout` maps settings to a
folder ``<run_dir>/<method>/<stage>/<label>-<hash of the settings>``, so

* two notebooks asking for the same run (03_pretrain and 05_ablations, 04_finetune and
  07_gat_connectivity) find the same folder and the second one reuses the finished run;
* two runs of different settings can never share a folder, so an ablation never silently
  reuses another ablation's pre-training, and no notebook overwrites another one's results;
* an interrupted run resumes in its own folder.

No notebook or driver builds a run path by hand: the drivers in :mod:`workbench.experiments`
take a ``RunLayout`` (or a ``run_dir``) and ask it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, get_logger, stable_hash

log = get_logger("runs")

__all__ = ["RunFolder", "RunLayout", "project_root", "resolve_path"]


def project_root() -> Path:
    """The folder relative paths of a notebook resolve against.

    ``$WORKBENCH_HOME`` when set; otherwise the nearest folder at or above the current one that
    holds ``pyproject.toml`` and a ``notebooks/`` folder (the project), so a notebook opened from
    ``notebooks/`` in JupyterLab writes to the same ``runs/`` as ``workbench reproduce``;
    otherwise the current folder.
    """
    env = os.environ.get("WORKBENCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as given when absolute, else relative to :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("_") or "run"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the settings that determine it.

    ``settings.json`` is written when the run is claimed; a finished run leaves a marker file
    (``done.json`` by default) with a small summary (e.g. its wall time).
    """

    path: Path
    settings: dict[str, Any]

    MARKER = "done.json"

    @property
    def finished(self) -> bool:
        """A finished run of exactly these settings is in the folder."""
        return (self.path / self.MARKER).is_file() and self.recorded_settings() == self.settings

    def recorded_settings(self) -> dict[str, Any] | None:
        p = self.path / "settings.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def claim(self) -> bool:
        """Record the settings; return whether a partial run in the folder may be resumed.

        A folder holding other settings (a hash collision, or a folder edited by hand) is not
        resumed: it is trained afresh, with a warning.
        """
        old = self.recorded_settings()
        if old == self.settings:
            return True
        if old is not None:
            changed = sorted(k for k in {*old, *self.settings} if old.get(k) != self.settings.get(k))
            log.warning("%s holds a run with other settings (%s differ): training afresh.",
                        self.path, ", ".join(changed))
            (self.path / self.MARKER).unlink(missing_ok=True)
        atomic_write_json(self.path / "settings.json", self.settings)
        return False

    def mark_finished(self, summary: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path / self.MARKER, _jsonable(summary or {}))

    def summary(self) -> dict[str, Any]:
        p = self.path / self.MARKER
        return json.loads(p.read_text()) if p.is_file() else {}

    def __truediv__(self, other: str) -> Path:
        return self.path / other


class RunLayout:
    """The folders of one reproduction (``run_dir``, e.g. ``runs/smoke``).

    ``layout.run("pretrain", method, label, settings)`` is the :class:`RunFolder` of those
    settings: ``<run_dir>/<method>/<stage>/<label>-<8 hex digits of the settings' hash>``.
    Relative ``run_dir`` paths resolve against :func:`project_root`; an empty one is
    ``runs/<profile>``, where ``workbench reproduce --profile <profile>`` writes.
    """

    def __init__(self, run_dir: str | os.PathLike = "", profile: str = "smoke") -> None:
        # empty: the reproduction's folder of the profile, so a notebook opened on its own
        # finds (and adds to) the runs of `workbench reproduce --profile <profile>`
        self.root = resolve_path(run_dir or Path("runs") / str(profile))

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    def run(self, stage: str, method: str, label: str, settings: dict[str, Any]) -> RunFolder:
        settings = _jsonable(settings)
        name = f"{_label(label)}-{stable_hash(settings, 8)}"
        return RunFolder(self.root / method / stage / name, settings)

    def finished_runs(self, stage: str, method: str, **match: Any) -> list[RunFolder]:
        """Finished runs of ``stage`` for ``method`` whose settings contain ``match``
        (top-level keys), newest first."""
        folder = self.root / method / stage
        out = []
        for p in folder.glob("*/settings.json"):
            settings = json.loads(p.read_text())
            run = RunFolder(p.parent, settings)
            if run.finished and all(settings.get(k) == _jsonable(v) for k, v in match.items()):
                out.append(run)
        return sorted(out, key=lambda r: (r.path / RunFolder.MARKER).stat().st_mtime,
                      reverse=True)

    def require(self, stage: str, method: str, what: str, hint: str, **match: Any) -> RunFolder:
        """The newest finished run matching ``match``, or a ``FileNotFoundError`` that says
        which notebook or command makes it (``hint``)."""
        runs = self.finished_runs(stage, method, **match)
        if not runs:
            wanted = ", ".join(f"{k}={v!r}" for k, v in match.items()) or "any settings"
            raise FileNotFoundError(
                f"No finished {what} of method {method!r} ({wanted}) under {self.root}. "
                f"{hint}")
        return runs[0]

    def tables(self) -> Path:
        return self.root / "tables"
