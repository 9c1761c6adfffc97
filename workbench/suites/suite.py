"""Benchmark suites: a public dataset, its published protocol and the published numbers.

A suite is a YAML file in ``workbench/suites/data`` (data, not code): the dataset (a reader
name and its options), the classes, the preprocessing every model's input gets (rate, band,
window), the subject protocol (``fixed`` train / validation / test subject lists, or subject
folds), the metric, the adaptation modes, and where to get the data. The published numbers
to compare with are rows of ``published.csv`` (one per model, mode and metric, each with its
source and the protocol it was measured under).

References
----------
OpenEEGBench (braindecode/OpenEEGBench, EUSIPCO 2026), Table II.
STELAR, Table 1 and appendix F. Trace, Table 1 and appendix B.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..data.splits import subject_number
from ..evaluation.protocols import Protocol
from ..utils import check_option

__all__ = ["DATA_DIR", "PUBLISHED_COLUMNS", "Suite", "SuiteDataMissing", "list_suites",
           "load_suite", "published_numbers", "subject_range", "to_fraction"]

DATA_DIR = Path(__file__).resolve().parent / "data"
PUBLISHED_COLUMNS = ["suite", "model", "ours", "mode", "metric", "value", "std", "scale",
                     "window_s", "sfreq", "split", "same_split", "source", "table"]
SCALES = ("fraction", "chance_rescaled_percent")


class SuiteDataMissing(FileNotFoundError):
    """The suite's data folder is absent or holds none of its files; the message says how to
    get them."""


def subject_range(spec: str | list) -> list[str]:
    """Subject numbers from ``"0-27"``, ``"1-70, 80"`` or a list: ``["0", "1", ..., "27"]``.

    Numbers are strings so that :func:`workbench.data.splits.fixed_subject_split` matches them
    to subject names ending in that number (``"7"`` finds ``"Subject07"`` and ``"S007"``).
    """
    if isinstance(spec, list):
        return [str(s) for s in spec]
    out: list[str] = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"Invalid subject range {part!r}: the end is below the start.")
            out.extend(str(i) for i in range(a, b + 1))
        elif part.isdigit():
            out.append(str(int(part)))
        elif part:
            raise ValueError(f"Invalid subject range {part!r}: expected 'A-B' or a number.")
    return out


def _natural(s: str) -> tuple:
    m = re.search(r"(\d+)$", str(s))
    return (0, int(m.group(1)), str(s)) if m else (1, 0, str(s))


@dataclass
class Suite:
    """One benchmark suite (see the module docstring); built by :func:`load_suite`."""

    name: str
    title: str
    dataset: str
    n_subjects: int
    classes: list[str]
    protocol: dict[str, Any]
    preprocessing: dict[str, Any]
    metric: str = "balanced_accuracy"
    modes: list[str] = field(default_factory=lambda: ["linear", "full"])
    reader_options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    url: str = ""
    download: str = ""
    path: Path | None = None

    @property
    def chance(self) -> float:
        """Chance level of the balanced accuracy: 1 / number of classes."""
        return 1.0 / len(self.classes)

    @property
    def window_s(self) -> float:
        return float(self.preprocessing["window_s"])

    @property
    def sfreq(self) -> float:
        return float(self.preprocessing["sfreq"])

    def recipe(self, sfreq: float | None = None, scale: str | None = "microvolts"
               ) -> dict[str, Any]:
        """The preprocessing recipe (fields of
        :class:`~workbench.data.preprocess.PreprocessConfig`) of this suite, at ``sfreq``
        (default: the suite's rate; a model with its own input rate gets its own) and
        ``scale``. No ICA, no re-referencing: every model sees the same cleaned signal."""
        p = self.preprocessing
        rate = float(sfreq or p["sfreq"])
        h_freq = p.get("h_freq")
        if h_freq is not None and h_freq >= rate / 2:
            h_freq = None  # above Nyquist at this rate: the resampler's filter does it
        return {"name": f"suite-{self.name}", "l_freq": p.get("l_freq"), "h_freq": h_freq,
                "notch": [], "reference": "none", "ica": False, "detect_bads": False,
                "montage": None, "channel_policy": "intersection", "resample": rate,
                "window_s": float(p["window_s"]), "overlap_s": float(p.get("overlap_s", 0.0)),
                "scale": scale}

    def how_to_get(self, data_path: str | Path | None = None) -> str:
        """Where the data come from, for an error message or the report."""
        where = str(data_path) if data_path else "DIR"
        cmd = self.download.replace("DIR", where)
        return (f"download it with `{cmd}` (or from {self.url}) and run "
                f"`workbench benchmark {self.name} --data-path {where}`")

    # ------------------------------------------------------------------ subjects
    def published_subjects(self) -> dict[str, list[str]]:
        """The published train / val / test subject numbers of a ``fixed`` protocol."""
        if self.protocol["name"] != "fixed":
            return {}
        return {r: subject_range(self.protocol.get(f"{r}_subjects", []))
                for r in ("train", "val", "test")}

    def folds(self, present: list[str], max_subjects: int | None = None,
              max_folds: int | None = None, seed: int = 0
              ) -> tuple[list[tuple[str, Protocol]], bool, str]:
        """The folds over the subjects ``present`` in a data folder, each a ``fixed``
        protocol (its train / validation / test subject lists).

        Returns ``(folds, exact, note)``: ``folds`` are ``(name, protocol)`` pairs; ``exact``
        is True when they are the published protocol (all its subjects present, no cap);
        otherwise ``note`` says how they differ, and the results are not comparable with the
        published numbers. Every fold is its own protocol so that a pre-training can be
        restricted to the fold's training subjects.

        A ``fixed`` split restricted to fewer subjects keeps the published order (the lowest
        numbers train, the highest test) and the published proportions, with at least two
        validation and two test subjects when eight or more subjects are present. Subject
        folds (``subject_kfold``) are drawn with ``seed``.
        """
        present = sorted({str(s) for s in present}, key=_natural)
        if max_subjects is not None:
            present = present[:max_subjects]
        name = self.protocol["name"]
        check_option("protocol", name, ("fixed", "subject_kfold"))
        if name == "fixed":
            return self._fixed(present)
        from ..data.splits import subject_kfold

        folds = int(self.protocol.get("folds", 5))
        if len(present) < 3:
            raise ValueError(f"Suite {self.name!r}: subject folds need at least 3 subjects "
                             f"(train, validation, test), found {len(present)}.")
        k = min(folds, len(present))
        table = pd.DataFrame({"subject": present, "dataset": self.dataset})
        val_size = float(self.protocol.get("val_size", 0.1))
        out = []
        for sp in subject_kfold(table, k=k, seed=seed, val_size=val_size):
            val = list(table["subject"].iloc[sp.val])
            train = list(table["subject"].iloc[sp.train])
            if not val and len(train) > 1:  # always validate on at least one subject
                val, train = train[-1:], train[:-1]
            out.append((f"fold{sp.fold}", Protocol(
                "fixed", train_subjects=train, val_subjects=val,
                test_subjects=list(table["subject"].iloc[sp.test]))))
        out = out[:max_folds] if max_folds else out
        exact = len(present) >= self.n_subjects and k == folds and len(out) == k
        note = "" if exact else (f"{k} subject folds over the {len(present)} subjects present"
                                 f"{f', {len(out)} run' if len(out) < k else ''} (published: "
                                 f"{folds} folds over {self.n_subjects}); not comparable with "
                                 "the published numbers")
        return out, exact, note

    def _fixed(self, present: list[str]) -> tuple[list[tuple[str, Protocol]], bool, str]:
        pub = self.published_subjects()
        have = {subject_number(s) for s in present}
        wanted = [s for r in ("train", "val", "test") for s in pub[r]]
        if all(s in have for s in wanted):
            # the names as present ("Subject07" for "7")
            byn = {subject_number(s): s for s in present}
            lists = {r: [byn[s] for s in pub[r]] for r in pub}
            extra = len(present) - len(wanted)
            note = "" if not extra else (f"{extra} subjects present beyond the published split "
                                         "are not used")
            return ([("fixed", Protocol("fixed", train_subjects=lists["train"],
                                        val_subjects=lists["val"],
                                        test_subjects=lists["test"]))], True, note)
        n, n_all = len(present), len(wanted)
        floor = 2 if n >= 8 else 1
        n_val = max(floor, round(n * len(pub["val"]) / n_all)) if pub["val"] else 0
        n_test = max(floor, round(n * len(pub["test"]) / n_all))
        if n - n_val - n_test < 1:
            raise ValueError(f"Suite {self.name!r}: {n} subjects are too few for a train / "
                             "validation / test split (need at least 3).")
        cut = n - n_val - n_test
        train, val, test = present[:cut], present[cut:n - n_test], present[n - n_test:]
        note = (f"split restricted to the {n} subjects present (published: {n_all}, subjects "
                f"{self.protocol['train_subjects']} / {self.protocol.get('val_subjects', '-')} "
                f"/ {self.protocol['test_subjects']}): train {_span(train)}, val {_span(val)}, "
                f"test {_span(test)}; not comparable with the published numbers")
        return ([("fixed", Protocol("fixed", train_subjects=train, val_subjects=val,
                                    test_subjects=test))], False, note)


def _span(subjects: list[str]) -> str:
    if not subjects:
        return "-"
    return subjects[0] if len(subjects) == 1 else f"{subjects[0]}..{subjects[-1]}"


def list_suites() -> list[str]:
    """Names of the suites shipped in ``workbench/suites/data``."""
    return sorted(p.stem for p in DATA_DIR.glob("*.yaml"))


def load_suite(name: str | Path) -> Suite:
    """A shipped suite by name, or a suite YAML file by path (checked field by field)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        check_option("suite", str(name), list_suites())
        path = DATA_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"Suite file {path} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    required = ("name", "title", "dataset", "n_subjects", "classes", "protocol", "preprocessing")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path}: suite fields {missing} are missing (required: "
                         f"{list(required)}).")
    known = set(Suite.__dataclass_fields__) - {"path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown suite fields {unknown}; expected {sorted(known)}.")
    for k in ("sfreq", "window_s"):
        if k not in data["preprocessing"]:
            raise ValueError(f"{path}: preprocessing.{k} is missing.")
    suite = Suite(**data, path=path)
    check_option(f"{path.name}: protocol.name", suite.protocol.get("name"),
                 ("fixed", "subject_kfold"))
    if suite.protocol["name"] == "fixed":
        pub = suite.published_subjects()
        seen: dict[str, str] = {}
        for role, subs in pub.items():
            for s in subs:
                if seen.setdefault(s, role) != role:
                    raise ValueError(f"{path}: subject {s} is in both the {seen[s]} and the "
                                     f"{role} subjects.")
    return suite


def to_fraction(value: float, scale: str, chance: float) -> float:
    """A published value as a fraction: ``chance_rescaled_percent`` (chance = 0, perfect =
    100, OpenEEGBench) becomes ``chance + (1 - chance) * value / 100``."""
    check_option("scale", scale, SCALES)
    if scale == "fraction":
        return float(value)
    return chance + (1.0 - chance) * float(value) / 100.0


def published_numbers(suite: str | Suite | None = None,
                      path: str | Path | None = None) -> pd.DataFrame:
    """The published numbers (``published.csv``), with ``value_fraction`` on our scale.

    Every row must name its source; a row of an unknown suite, scale or mode raises
    ``ValueError`` naming the row.
    """
    path = Path(path) if path is not None else DATA_DIR / "published.csv"
    df = pd.read_csv(path, dtype={"ours": str, "split": str, "source": str, "table": str},
                     keep_default_na=False, na_values={"value": [""], "std": [""]})
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing.")
    chance: dict[str, float] = {}
    for i, row in df.iterrows():
        where = f"{path.name} row {i + 2} ({row['suite']}, {row['model']})"
        if not str(row["source"]).strip():
            raise ValueError(f"{where}: no source.")
        if row["suite"] not in chance:
            if row["suite"] not in list_suites():
                raise ValueError(f"{where}: unknown suite; suites are {list_suites()}.")
            chance[row["suite"]] = load_suite(row["suite"]).chance
        check_option(f"{where}: scale", row["scale"], SCALES)
        check_option(f"{where}: same_split", row["same_split"], ("yes", "no"))
        check_option(f"{where}: mode", row["mode"], ("linear", "full"))
    df["same_split"] = df["same_split"] == "yes"  # the suite's split, as published
    df["value_fraction"] = [to_fraction(v, s, chance[su]) for v, s, su in
                            zip(df["value"], df["scale"], df["suite"], strict=True)]
    df["std_fraction"] = [s * (1 - chance[su]) / 100 if sc != "fraction" else s
                          for s, sc, su in zip(df["std"], df["scale"], df["suite"], strict=True)]
    if suite is not None:
        name = suite.name if isinstance(suite, Suite) else str(suite)
        df = df[df["suite"] == name].reset_index(drop=True)
    return df
