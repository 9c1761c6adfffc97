"""EDF/EDF+/BDF files: the header parsed without reading samples (``workbench data check``)
and a reader that refuses truncated files and handles channels recorded at different rates
inside one file (``mixed_rates``).

References
----------
Kemp B., Olivan J. (2003). European data format 'plus' (EDF+), an EDF alike standard format
for the exchange of physiological data. Clin. Neurophysiol. 114(9).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ...utils import check_option, get_logger

log = get_logger("readers")


@dataclass
class EdfHeader:
    """The fixed-size header of an EDF/EDF+/BDF file (read without touching the samples)."""

    path: Path
    kind: str
    start: datetime | None
    header_bytes: int
    n_records: int
    record_duration: float
    labels: list[str]
    physical_dims: list[str]
    samples_per_record: list[int]
    file_bytes: int

    @property
    def bytes_per_sample(self) -> int:
        return 3 if self.kind == "BDF" else 2

    @property
    def signal_idx(self) -> list[int]:
        """Indices of data signals (EDF+/BDF+ annotation signals left out)."""
        return [i for i, lab in enumerate(self.labels)
                if lab.strip() not in ("EDF Annotations", "BDF Annotations")]

    @property
    def sfreqs(self) -> list[float]:
        """Sampling rate of each data signal."""
        d = self.record_duration if self.record_duration > 0 else 1.0
        return [self.samples_per_record[i] / d for i in self.signal_idx]

    @property
    def record_bytes(self) -> int:
        return sum(self.samples_per_record) * self.bytes_per_sample

    @property
    def expected_bytes(self) -> int:
        return self.header_bytes + max(self.n_records, 0) * self.record_bytes

    @property
    def duration(self) -> float:
        return max(self.n_records, 0) * self.record_duration

    def check_complete(self) -> None:
        """Raise ``ValueError`` when the file is shorter than its header declares."""
        if self.n_records >= 0 and self.file_bytes < self.expected_bytes:
            complete = (self.file_bytes - self.header_bytes) // max(self.record_bytes, 1)
            raise ValueError(
                f"{self.path}: truncated {self.kind} file: the header declares {self.n_records} "
                f"data records of {self.record_bytes} bytes ({self.expected_bytes} bytes in all) "
                f"but the file has {self.file_bytes} bytes ({complete} complete records).")


def _field(raw: bytes, a: int, b: int) -> str:
    return raw[a:b].decode("latin-1").strip()


def read_edf_header(path: str | Path) -> EdfHeader:
    """Parse the header of an EDF, EDF+ or BDF file; ``ValueError`` naming the file if invalid."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise ValueError(f"{path}: not an EDF/BDF file: {len(head)} bytes, shorter than the "
                             "256-byte header.")
        try:
            if head[:8] == b"\xffBIOSEMI":
                kind = "BDF"
            elif _field(head, 0, 8) == "0":
                kind = "EDF"
            else:
                raise ValueError(f"version field {head[:8]!r}")
            reserved = _field(head, 192, 236)
            if reserved.startswith("EDF+"):
                kind = reserved[:5]
            header_bytes = int(_field(head, 184, 192))
            n_records = int(_field(head, 236, 244))
            record_duration = float(_field(head, 244, 252))
            ns = int(_field(head, 252, 256))
        except ValueError as e:
            raise ValueError(f"{path}: not a valid EDF/BDF header ({e}).") from e
        if ns <= 0 or header_bytes != 256 * (ns + 1):
            raise ValueError(f"{path}: corrupt EDF/BDF header: {ns} signals but a header of "
                             f"{header_bytes} bytes (expected {256 * (ns + 1)}).")
        sig = f.read(256 * ns)
    if len(sig) < 256 * ns:
        raise ValueError(f"{path}: truncated EDF/BDF header ({256 + len(sig)} of {header_bytes} "
                         "bytes).")

    def col(offset: int, width: int) -> list[str]:
        base = offset * ns
        return [_field(sig, base + i * width, base + (i + 1) * width) for i in range(ns)]

    labels = col(0, 16)
    dims = col(16 + 80, 8)
    try:
        spr = [int(v) for v in col(16 + 80 + 8 + 8 * 4 + 80, 8)]
    except ValueError as e:
        raise ValueError(f"{path}: corrupt EDF/BDF header: samples per record ({e}).") from e
    start = None
    try:
        start = datetime.strptime(_field(head, 168, 184), "%d.%m.%y%H.%M.%S")
    except ValueError:
        pass
    return EdfHeader(path, kind, start, header_bytes, n_records, record_duration, labels, dims,
                     spr, size)


def _read_raw(path: Path, **kwargs):
    import mne

    try:
        return mne.io.read_raw(path, preload=True, verbose="error", **kwargs)
    except Exception as e:  # MNE raises many types for a damaged file
        raise ValueError(f"{path}: MNE cannot read this file ({type(e).__name__}: {e}).") from e


def read_edf(path: str | Path, *, mixed_rates: str = "drop", exclude: Iterable[str] = ()
             ) -> tuple[Any, list[dict]]:
    """Read an EDF/BDF file with MNE after checking that it is complete.

    Parameters
    ----------
    mixed_rates : {"drop", "resample", "raise"}
        What to do when signals inside the file have different rates (Sleep-EDF stores EEG at
        100 Hz and respiration/temperature at 1 Hz): ``drop`` keeps the channels at the highest
        rate and lists the others in the returned ``dropped``; ``resample`` lets MNE
        interpolate the slow channels up to the highest rate; ``raise`` refuses the file.

    Returns
    -------
    raw : mne.io.Raw (preloaded)
    dropped : list of dict (``name``, ``reason``)
    """
    check_option("mixed_rates", mixed_rates, ("drop", "resample", "raise"))
    path = Path(path)
    hdr = read_edf_header(path)
    hdr.check_complete()
    exclude = list(exclude)
    dropped = [{"name": n, "reason": "excluded by the reader"} for n in exclude]
    rates = dict(zip([hdr.labels[i] for i in hdr.signal_idx], hdr.sfreqs))
    if len(set(rates.values())) > 1:
        top = max(rates.values())
        slow = {n: r for n, r in rates.items() if r != top}
        if mixed_rates == "raise":
            raise ValueError(f"{path}: channels have different sampling rates: {slow} Hz besides "
                             f"{top} Hz; pass mixed_rates='drop' or 'resample'.")
        if mixed_rates == "drop":
            log.info("%s: dropping %d channels recorded below %g Hz: %s", path.name, len(slow),
                     top, sorted(slow))
            exclude += list(slow)
            dropped += [{"name": n, "reason": f"sampled at {r:g} Hz, not {top:g} Hz"}
                        for n, r in slow.items()]
    raw = _read_raw(path, exclude=exclude) if exclude else _read_raw(path)
    return raw, dropped
