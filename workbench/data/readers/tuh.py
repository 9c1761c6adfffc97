"""Temple University Hospital EEG corpora: TUAB (abnormal EEG) and TUEV (EEG events).

Both are EDF files with referential channels named ``EEG FP1-REF`` (``01_tcp_ar``: average
reference), ``EEG FP1-LE`` (``02_tcp_le``: linked ears) and extra channels (``EEG EKG1-REF``,
``EEG LOC-REF``, ``PHOTIC-REF``, ``IBI``, ``BURSTS``, ``SUPPR``, ``EEG 26-REF`` ...), mostly at
250 Hz (some 256, 400, 512 Hz). By default the reader derives the 22-channel TCP bipolar montage
(:data:`workbench.channels.TCP_BIPOLAR_22`, via :func:`workbench.channels.bipolar_derivation`);
``montage="bipolar16"`` gives the 16 longitudinal derivations of BIOT/EEGM2 and
``montage="referential"`` keeps the referential channels (non-EEG ones typed, not dropped).
Files without the electrodes a montage needs (``03_tcp_ar_a`` has no A1/A2) raise an error naming
the missing electrodes; use ``bipolar16`` for them.

TUAB (v2/v3): ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/.../<subject>_<session>_<token>.edf``
(v3 names are like ``aaaaaaav_s004_t000.edf``). The label comes from the folder: normal 0,
abnormal 1; the split (train/eval) goes into ``meta``. One Recording per file with a
recording-level label.

TUEV (v2): ``edf/{train,eval}/<subject>/<subject>_<NNNNNNNN>.edf`` with a ``.rec`` file of the
same stem: CSV rows ``channel,start,stop,code`` (channel = index into the TCP montage, times in
seconds, code 1-6). Codes map to labels 0-5: spsw (spike and sharp wave), gped (generalised
periodic epileptiform discharge), pled (periodic lateralised epileptiform discharge), eyem (eye
movement), artf (artifact), bckg (background). Events carry the extra column ``channel`` (the
TCP derivation name). Without a ``.rec`` file, per-channel HTK label files ``<stem>_chNNN.lab``
(``start stop label`` in units of 100 ns) are read instead.

References
----------
Obeid I., Picone J. (2016). The Temple University Hospital EEG data corpus. Front. Neurosci. 10.
Lopez S. et al. (2015). Automated identification of abnormal adult EEGs. IEEE SPMB.
Harati A. et al. (2015). Improved EEG event classification using differential energy. IEEE SPMB.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ...channels import BIPOLAR_16, TCP_BIPOLAR_22, bipolar_derivation
from ...utils import check_option
from ..recording import Recording, make_events
from .generic import (
    DatasetInfo,
    classify_channels,
    clip_events,
    finalize,
    raw_to_recording,
    read_edf,
)
from .generic import check_file as _check_edf

MONTAGES = {"tcp22": TCP_BIPOLAR_22, "bipolar16": BIPOLAR_16, "referential": None}
TUAB_LABELS = {0: "normal", 1: "abnormal"}
TUEV_LABELS = {0: "spsw", 1: "gped", 2: "pled", 3: "eyem", 4: "artf", 5: "bckg"}
_REQUEST = "https://isip.piconepress.com/projects/nedc/html/tuh_eeg/"
_LICENCE = "TUH EEG Corpus data use agreement (free for research, registration required)"
_TUH_COMMON = dict(sfreq=None, channels=tuple(f"{a}-{b}" for a, b in TCP_BIPOLAR_22),
                   public=False, licence=_LICENCE, url=_REQUEST)

TUAB_INFO = DatasetInfo(
    name="tuab",
    description="TUH Abnormal EEG Corpus: routine clinical EEG labelled normal / abnormal; TCP "
                "bipolar montage; mostly 250 Hz.",
    label_names=TUAB_LABELS,
    **_TUH_COMMON,
    request_url=_REQUEST + " (sign the data use agreement, e-mail it; you get rsync access "
                "to tuh_eeg_abnormal)",
    download_hint="After approval: rsync -auxvL nedc-tuh-eeg@www.isip.piconepress.com:"
                  "data/tuh_eeg/tuh_eeg_abnormal/v3.0.1/ PATH",
    layout="PATH/edf/{train,eval}/{normal,abnormal}/01_tcp_ar/[...]/<subject>_<session>_"
           "<token>.edf (PATH may also be the edf folder).",
    citation="Obeid & Picone (2016) Front. Neurosci. 10; Lopez et al. (2015) IEEE SPMB",
)

TUEV_INFO = DatasetInfo(
    name="tuev",
    description="TUH EEG Events Corpus: 6 event classes annotated per TCP channel (.rec files).",
    label_names=TUEV_LABELS,
    **_TUH_COMMON,
    request_url=_REQUEST + " (sign the data use agreement, e-mail it; you get rsync access "
                "to tuh_eeg_events)",
    download_hint="After approval: rsync -auxvL nedc-tuh-eeg@www.isip.piconepress.com:"
                  "data/tuh_eeg/tuh_eeg_events/v2.0.1/ PATH",
    layout="PATH/edf/{train,eval}/<subject>/<subject>_<NNNNNNNN>.edf, each with <stem>.rec "
           "(or <stem>_chNNN.lab files) beside it (PATH may also be the edf folder).",
    citation="Obeid & Picone (2016) Front. Neurosci. 10; Harati et al. (2015) IEEE SPMB",
)


# ----------------------------------------------------------------------------- shared
def _edf_root(path: Path) -> Path:
    return path / "edf" if (path / "edf").is_dir() else path


def _montage(rec: Recording, montage: str, file: Path) -> Recording:
    pairs = MONTAGES[montage]
    if pairs is None:
        return rec
    eeg = rec.eeg_picks
    try:
        data, names = bipolar_derivation(rec.data[eeg], [rec.ch_names[i] for i in eeg], pairs)
    except ValueError as e:
        raise ValueError(f"{file}: montage {montage!r}: {e}") from e
    meta = dict(rec.meta)
    meta["referential_channels"] = list(rec.ch_names)
    meta["montage"] = montage
    return rec.replace(data=data, ch_names=names, ch_types=["eeg"] * len(names), meta=meta)


def _split_name(file: Path) -> tuple[str, str, str]:
    parts = file.stem.split("_")
    if len(parts) >= 3:
        return parts[0], parts[1], "_".join(parts[2:])
    if len(parts) == 2:
        return parts[0], "0", parts[1]
    return file.stem, "0", "0"


# ----------------------------------------------------------------------------- TUAB
def tuab_file_subject(file: str | Path) -> str:
    return _split_name(Path(file))[0]


def _tuab_parts(file: Path) -> tuple[str, int]:
    low = [p.lower() for p in file.parts]
    split = next((p for p in low if p in ("train", "eval", "dev")), None)
    label = 1 if "abnormal" in low else 0 if "normal" in low else None
    if split is None or label is None:
        raise ValueError(f"{file}: cannot tell the split and label from the path; expected "
                         f"{TUAB_INFO.layout}")
    return split, label


def tuab_list_files(path: str | Path, **options: Any) -> list[Path]:
    root = _edf_root(Path(path))
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {TUAB_INFO.layout}")
    files = []
    for split in ("train", "eval"):
        for cls in ("normal", "abnormal"):
            d = root / split / cls
            if d.is_dir():
                files += sorted(d.rglob("*.edf"))
    if not files:
        raise FileNotFoundError(f"{root}: no EDF files under train|eval/normal|abnormal. "
                                f"Expected layout: {TUAB_INFO.layout}")
    return files


def tuab_layout_problems(path: str | Path, **options: Any) -> list[tuple[str, str]]:
    root = _edf_root(Path(path))
    return [(str(root / s / c), "folder not found") for s in ("train", "eval")
            for c in ("normal", "abnormal") if not (root / s / c).is_dir()]


def tuab_read_file(file: str | Path, *, montage: str = "tcp22", nonfinite: str = "raise",
                   flat: str = "flag") -> list[Recording]:
    """One EDF -> one Recording labelled normal (0) / abnormal (1) from its folder."""
    check_option("montage", montage, MONTAGES)
    file = Path(file)
    split, label = _tuab_parts(file)
    subject, session, token = _split_name(file)
    raw, dropped = read_edf(file)
    dur = raw.n_times / raw.info["sfreq"]
    rec = raw_to_recording(
        raw, dataset="tuab", subject=subject, session=session, recording=token, source=file,
        events=make_events([0.0], dur, label, [TUAB_LABELS[label]]), label=label,
        label_names=TUAB_LABELS, dropped=dropped,
        meta={"split": split, "reference": _reference(file)})
    return finalize([_montage(rec, montage, file)], nonfinite=nonfinite, flat=flat)


def _reference(file: Path) -> str | None:
    return next((p for p in file.parts if re.match(r"^\d\d_tcp_", p)), None)


# ----------------------------------------------------------------------------- TUEV
def tuev_file_subject(file: str | Path) -> str:
    return Path(file).parent.name


def tuev_list_files(path: str | Path, **options: Any) -> list[Path]:
    root = _edf_root(Path(path))
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {TUEV_INFO.layout}")
    files = sorted(root.rglob("*.edf"))
    if not files:
        raise FileNotFoundError(f"{root}: no EDF files. Expected layout: {TUEV_INFO.layout}")
    return files


def tuev_layout_problems(path: str | Path, **options: Any) -> list[tuple[str, str]]:
    root = _edf_root(Path(path))
    out = [(str(root / s), "folder not found") for s in ("train", "eval")
           if not (root / s).is_dir()]
    for f in (sorted(root.rglob("*.edf")) if root.is_dir() else []):
        if not f.with_suffix(".rec").exists() and not list(f.parent.glob(f"{f.stem}_ch*.lab")):
            out.append((str(f.with_suffix(".rec")), "no .rec (or .lab) event file for this EDF"))
    return out


def read_rec(file: str | Path, n_channels: int = 22) -> pd.DataFrame:
    """Parse a TUEV ``.rec`` file: ``channel, start, stop, code`` per row."""
    file = Path(file)
    rows = []
    for i, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            ch, code = int(float(parts[0])), int(float(parts[3]))
            a, b = float(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            raise ValueError(f"{file}:{i}: expected 'channel,start,stop,code', got "
                             f"{line!r}.") from None
        if code not in range(1, 7) or not 0 <= ch < n_channels or b < a:
            raise ValueError(f"{file}:{i}: invalid event {line!r} (code 1-6, channel "
                             f"0-{n_channels - 1}, stop >= start).")
        rows.append((ch, a, b, code - 1))
    return pd.DataFrame(rows, columns=["channel", "start", "stop", "label"])


_LAB_CODES = {v: k for k, v in TUEV_LABELS.items()}


def read_lab(files: list[Path]) -> pd.DataFrame:
    """Parse per-channel HTK label files (``<stem>_chNNN.lab``: ``start stop label``, 100 ns)."""
    rows = []
    for f in files:
        m = re.search(r"_ch(\d+)\.lab$", f.name)
        if not m:
            continue
        ch = int(m.group(1))
        for i, line in enumerate(f.read_text().splitlines(), start=1):
            parts = line.split()
            if len(parts) < 3:
                continue
            if parts[2] not in _LAB_CODES:
                raise ValueError(f"{f}:{i}: unknown label {parts[2]!r}; expected one of "
                                 f"{list(_LAB_CODES)}.")
            rows.append((ch, int(parts[0]) / 1e7, int(parts[1]) / 1e7, _LAB_CODES[parts[2]]))
    return pd.DataFrame(rows, columns=["channel", "start", "stop", "label"])


def tuev_read_file(file: str | Path, *, montage: str = "tcp22", nonfinite: str = "raise",
                   flat: str = "flag") -> list[Recording]:
    """One EDF with its ``.rec`` events (label 0-5, one row per annotated channel segment)."""
    check_option("montage", montage, MONTAGES)
    file = Path(file)
    rec_file = file.with_suffix(".rec")
    labs = sorted(file.parent.glob(f"{file.stem}_ch*.lab"))
    if rec_file.exists():
        table = read_rec(rec_file)
    elif labs:
        table = read_lab(labs)
    else:
        raise FileNotFoundError(f"{file}: no event file {rec_file.name} (or "
                                f"{file.stem}_chNNN.lab).")
    raw, dropped = read_edf(file)
    dur = raw.n_times / raw.info["sfreq"]
    tcp = [f"{a}-{b}" for a, b in TCP_BIPOLAR_22]
    ev = make_events(table["start"], table["stop"] - table["start"], table["label"],
                     [TUEV_LABELS[int(v)] for v in table["label"]])
    ev["channel"] = [tcp[int(c)] for c in table["channel"]]
    ev = clip_events(ev.sort_values(["onset", "channel"], kind="stable"), dur)
    rec = raw_to_recording(
        raw, dataset="tuev", subject=tuev_file_subject(file), session="0", recording=file.stem,
        source=file, events=ev, label_names=TUEV_LABELS, dropped=dropped,
        meta={"split": next((p for p in file.parts if p in ("train", "eval")), None),
              "event_file": str(rec_file if rec_file.exists() else labs[0])})
    return finalize([_montage(rec, montage, file)], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, *, montage: str = "tcp22", **options: Any) -> str:
    """EDF header check plus: the electrodes the montage needs are present."""
    from .generic import read_edf_header

    msg = _check_edf(file)
    pairs = MONTAGES.get(montage)
    if pairs:
        hdr = read_edf_header(file)
        labels = [hdr.labels[i] for i in hdr.signal_idx]
        names, types, _ = classify_channels(labels, source=str(file))
        have = {n for n, t in zip(names, types) if t == "eeg"}
        missing = sorted({e for p in pairs for e in p} - have)
        if missing:
            raise ValueError(f"{file}: montage {montage!r} needs electrodes {missing}, not in "
                             "the file.")
    return msg


def _tuev_check(file: str | Path, **options: Any) -> str:
    file = Path(file)
    msg = check_file(file, **options)
    rec = file.with_suffix(".rec")
    if rec.exists():
        msg += f", {len(read_rec(rec))} events"
    elif not list(file.parent.glob(f"{file.stem}_ch*.lab")):
        raise FileNotFoundError(f"{file}: no event file {rec.name}.")
    return msg


def _tuab_check(file: str | Path, **options: Any) -> str:
    _tuab_parts(Path(file))
    return check_file(file, **options)


TUAB = SimpleNamespace(INFO=TUAB_INFO, list_files=tuab_list_files, read_file=tuab_read_file,
                       file_subject=tuab_file_subject, check_file=_tuab_check,
                       layout_problems=tuab_layout_problems, __name__=__name__ + ".TUAB")
"""The TUAB reader (registry entry ``tuab``)."""

TUEV = SimpleNamespace(INFO=TUEV_INFO, list_files=tuev_list_files, read_file=tuev_read_file,
                       file_subject=tuev_file_subject, check_file=_tuev_check,
                       layout_problems=tuev_layout_problems, __name__=__name__ + ".TUEV")
"""The TUEV reader (registry entry ``tuev``)."""

__all__ = ["TUAB", "TUEV", "read_rec", "read_lab", "MONTAGES"]
