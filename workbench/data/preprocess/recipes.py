"""Preprocessing recipes: :class:`PreprocessConfig` (every knob of the pipeline) and the named
recipes of the papers (:data:`RECIPES`, :func:`get_recipe`).

Frequencies in Hz, amplitudes in volts, durations in seconds. The fields split in two: those
that shape the cleaned signal (the cache key of a cleaned recording, :meth:`signal_dict`) and
those that only shape windows (:data:`WINDOW_FIELDS`; changing them reuses cached recordings).

References
----------
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from ...config import from_dict, to_dict
from ...utils import check_option, check_positive
from ..windowing import SCALINGS

PIPELINE_VERSION = 1  # bump when a change alters the cleaned signals: invalidates caches
ICLABEL_CLASSES = ("brain", "muscle artifact", "eye blink", "heart beat", "line noise",
                   "channel noise", "other")
# Fields that only shape windows: changing them reuses the cached cleaned recordings.
WINDOW_FIELDS = ("name", "window_s", "overlap_s", "window_mode", "scale", "reject_ptp",
                 "channel_policy", "channels")



@dataclass
class PreprocessConfig:
    """Every knob of the pipeline; validated by :func:`workbench.config.from_dict`.

    Frequencies in Hz, amplitudes in volts, durations in seconds.
    """

    name: str = "custom"
    # channels
    channel_types: dict[str, str] = field(default_factory=dict)  # name -> eeg/eog/ecg/emg/misc
    montage: str | None = "colin27_1005"  # None: no positions (no interpolation, no ICLabel)
    # bad channels
    detect_bads: bool = True
    flat_std: float = 1e-7       # V; std (after band-pass) below this = flat
    bad_ratio: float = 10.0      # std > ratio x median (or < median / ratio) = extreme variance
    max_bad_frac: float = 0.3    # more bad EEG channels than this fraction: error naming them
    interpolate: bool = True     # interpolate bads (spherical splines); else drop them
    # reference and filters
    reference: typing.Literal["average", "none"] = "average"
    l_freq: float | None = 1.0
    h_freq: float | None = 49.0
    notch: list[float] = field(default_factory=list)
    # ICA + ICLabel
    ica: bool = True
    ica_method: typing.Literal["picard", "infomax"] = "picard"
    ica_n_components: float | None = None  # None: the data rank; >= 1: a count; < 1: variance
    ica_fit_band: list[float] | None = field(default_factory=lambda: [1.0, 100.0])  # None: l/h
    ica_max_iter: int = 500
    ica_decim: int = 1
    keep_classes: list[str] = field(default_factory=lambda: ["brain"])
    exclude_threshold: float = 0.0  # a non-kept top class must reach this probability
    max_exclude_frac: float = 1.0   # cap on the share of components removed (most confident)
    # output
    resample: float | None = None   # Hz; None keeps the native rate
    bipolar: typing.Literal["none", "banana16"] = "none"
    # store layout: recordings whose EEG channels differ from the store's are reordered (same
    # set), cut to the channels common to every recording, or completed by interpolation
    channel_policy: typing.Literal["reorder", "intersection", "interpolate"] = "reorder"
    channels: list[str] | None = None  # the store's channels; None: the first recording's
    window_s: float = 2.0
    overlap_s: float = 0.2
    window_mode: typing.Literal["auto", "fixed", "events"] = "auto"
    scale: str | None = "microvolts"  # None, microvolts, percentile95, minmax
    reject_ptp: float | None = None  # V; windows with a larger peak-to-peak are dropped
    seed: int = 42

    def __post_init__(self) -> None:
        check_option("scale", self.scale, SCALINGS)
        for t in self.channel_types.values():
            check_option("channel_types", t, ("eeg", "eog", "ecg", "emg", "misc", "stim"))
        for k in self.keep_classes:
            check_option("keep_classes", k, ICLABEL_CLASSES)
        for name in ("flat_std", "window_s", "ica_max_iter", "ica_decim"):
            check_positive(name, getattr(self, name))
        if self.bad_ratio <= 1:
            raise ValueError(f"Invalid value for the 'bad_ratio' parameter: expected > 1, got "
                             f"{self.bad_ratio!r}.")
        check_positive("overlap_s", self.overlap_s, strict=False)
        for name in ("max_bad_frac", "exclude_threshold", "max_exclude_frac"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"Invalid value for the '{name}' parameter: expected a number "
                                 f"in [0, 1], got {v!r}.")
        if self.overlap_s >= self.window_s:
            raise ValueError(f"Invalid value for the 'overlap_s' parameter: must be smaller than "
                             f"window_s={self.window_s}, got {self.overlap_s}.")
        for name in ("l_freq", "h_freq", "resample", "reject_ptp", "ica_n_components"):
            v = getattr(self, name)
            if v is not None:
                check_positive(name, v)
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(f"Invalid values for the 'l_freq'/'h_freq' parameters: l_freq must "
                             f"be below h_freq, got {self.l_freq} and {self.h_freq}.")
        for f in self.notch:
            check_positive("notch", f)
        if self.ica_fit_band is not None:
            b = list(self.ica_fit_band)
            if len(b) != 2 or not 0 < b[0] < b[1]:
                raise ValueError(f"Invalid value for the 'ica_fit_band' parameter: expected "
                                 f"[low, high] with 0 < low < high, got {b!r}.")
        if self.ica and self.montage is None:
            raise ValueError("Invalid value for the 'montage' parameter: ICA + ICLabel needs "
                             "electrode positions; set a montage or ica=False.")

    def signal_dict(self) -> dict[str, Any]:
        """The fields that shape the cleaned signal (the cache key of a recording)."""
        return {k: v for k, v in to_dict(self).items() if k not in WINDOW_FIELDS}


_OMFA = dict(name="omfa", l_freq=1.0, h_freq=49.0, reference="average", ica=True,
             keep_classes=["brain"], resample=None, window_s=2.0, overlap_s=0.2,
             scale="microvolts")
RECIPES: dict[str, dict[str, Any]] = {
    # One Model for All: average ref, 1-49 Hz, ICA + ICLabel (every non-brain component out),
    # 2 s windows with 0.2 s overlap, native rates. Scaling to microvolts: our default.
    "omfa": _OMFA,
    # STELAR: 0.3-75 Hz, notch at 60 Hz, 200 Hz, 30 s windows scaled to [-1, 1].
    "stelar": dict(name="stelar", l_freq=0.3, h_freq=75.0, notch=[60.0], ica=False,
                   resample=200.0, window_s=30.0, overlap_s=0.0, scale="minmax"),
    # Trace: 0.1-75 Hz, notch, 200 Hz, non-overlapping windows. The text lost the numbers of
    # the notch and the window: our defaults 50 Hz (LaBraM/CBraMod protocol) and 10 s.
    "trace": dict(name="trace", l_freq=0.1, h_freq=75.0, notch=[50.0], ica=False,
                  resample=200.0, window_s=10.0, overlap_s=0.0, scale="microvolts"),
    # EEGM2: 128 Hz, per-channel 95th-percentile scaling, 10 s windows; the band and the notch
    # are our defaults (the text says "band-pass filtered"); bipolar="banana16" for TUAB.
    "eegm2": dict(name="eegm2", l_freq=0.5, h_freq=50.0, notch=[60.0], ica=False,
                  resample=128.0, window_s=10.0, overlap_s=0.0, scale="percentile95"),
    # Fast and simple: average ref, 0.5-45 Hz, no ICA, native rate, 2 s windows.
    "minimal": dict(name="minimal", l_freq=0.5, h_freq=45.0, ica=False, window_s=2.0,
                    overlap_s=0.0, scale="microvolts"),
}


def get_recipe(name: str, **overrides: Any) -> PreprocessConfig:
    """The named recipe (see :data:`RECIPES`) with ``overrides``, validated.

    >>> get_recipe("omfa").h_freq
    49.0
    """
    check_option("recipe", name, RECIPES)
    return from_dict(PreprocessConfig, {**RECIPES[name], **overrides}, where=f"recipe {name!r}")


def as_config(cfg: PreprocessConfig | str | dict[str, Any]) -> PreprocessConfig:
    """A config from a config, a recipe name or a dict of fields (validated)."""
    if isinstance(cfg, PreprocessConfig):
        return cfg
    if isinstance(cfg, str):
        return get_recipe(cfg)
    if isinstance(cfg, dict):
        return from_dict(PreprocessConfig, cfg)
    raise TypeError(f"Invalid type for the 'cfg' parameter: expected PreprocessConfig, a recipe "
                    f"name {sorted(RECIPES)} or a dict, got {type(cfg).__name__}.")

