"""Heterogeneous synthetic EEG: the embedded default dataset, so everything runs with no download.

Three layouts mimic the emotion corpora of the One Model for All paper: ``syn_seed`` (62 SEED
channels at 200 Hz, 3 classes), ``syn_deap`` (32 DEAP channels at 128 Hz, 2 classes) and
``syn_dreamer`` (14 Emotiv channels at 128 Hz, 2 classes); their channel union is the SEED 62.

Signal model, per subject-session recording (all amplitudes in volts):

* **background**: 1/f^beta (pink) time courses of many dipoles spread under the scalp, mixed to
  the electrodes through a smooth lead field, so neighbouring channels are correlated;
* **rhythms**: waxing and waning alpha (parieto-occipital), theta (frontal midline) and beta
  (sensorimotor) dipoles at subject-specific frequencies;
* **class effect**: a few narrow-band dipoles whose amplitude during a trial depends on its class
  (frontal alpha asymmetry, temporal beta/gamma, parietal alpha, frontal theta). Strength,
  position and orientation, and the band of each effect vary per subject, and part of each
  subject's class pattern is its own, so cross-subject decoding is harder than within-subject;
* **waveform shape**: a non-sinusoidal mu-like rhythm over C3 or C4 (a fundamental at about the
  subject's alpha frequency plus its phase-locked second harmonic) whose harmonic phase follows
  the class: sharp peaks for one class, sharp troughs or a steep rise for another. Its power
  spectrum and covariances are the same for every class, so band power (the DE baseline) cannot
  see this part of the class information, while a model of the raw signal can (skewness shows
  it). Real rhythms carry such shape information (Cole and Voytek 2017), and it is what lets the
  corpus test whether a deep model learns more than band power: with ``shape_uv=0`` the class
  lives in band power alone and the DE baseline is close to optimal;
* **drift** and sensor noise per channel, channel gains that change between sessions;
* **artifacts** (``artifacts=True``), carried by super-Gaussian sources: eye blinks (sparse
  large deflections on Fp1/Fp2/AF*), muscle bursts (bursty 20-90 Hz activity on temporal
  channels) and 50 Hz line noise, so ICA + ICLabel have something real to remove.

Brain and artifact parts draw from separate random streams: for one seed, the recording with
``artifacts=False`` is exactly the recording with artifacts minus the artifact signals.

References
----------
Zheng W.-L., Lu B.-L. (2015). Investigating critical frequency bands and channels for EEG-based
emotion recognition with deep neural networks. IEEE TAMD 7(3). (SEED; lateral temporal beta and
gamma increase with positive emotion.)
Davidson R. J. (1992). Anterior cerebral asymmetry and the nature of emotion. Brain Cogn. 20(1).
Cole S. R., Voytek B. (2017). Brain oscillations and the importance of waveform shape. Trends
Cogn. Sci. 21(2). (Non-sinusoidal rhythms: sharpness and rise-decay asymmetry.)
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
"""

from __future__ import annotations

import copy
import functools
import logging
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sp_signal
from scipy.ndimage import uniform_filter1d

from ..channels import DEAP_32, DREAMER_14, SEED_62, channel_positions
from ..utils import check_option, check_positive
from .recording import Recording, make_events

logger = logging.getLogger("workbench")

GENERATOR_VERSION = 2
"""Bumped whenever the same arguments would give other arrays (it keys the store cache)."""


@dataclass(frozen=True)
class SyntheticDataset:
    """Layout of one synthetic dataset: channels, sampling rate and class names."""

    name: str
    ch_names: tuple[str, ...]
    sfreq: float
    class_names: tuple[str, ...]
    effect_scale: float = 1.0  # strength of the class effect relative to SignalModel.class_strength

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    @property
    def label_names(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))


SYNTHETIC_DATASETS: dict[str, SyntheticDataset] = {
    "syn_seed": SyntheticDataset("syn_seed", SEED_62, 200.0, ("negative", "neutral", "positive")),
    # two-class valence contrasts the extreme classes of the template: scaled down so that both
    # layouts are about as hard as the three-class one
    "syn_deap": SyntheticDataset("syn_deap", DEAP_32, 128.0, ("low valence", "high valence"),
                                 effect_scale=0.7),
    "syn_dreamer": SyntheticDataset("syn_dreamer", DREAMER_14, 128.0,
                                    ("low valence", "high valence"), effect_scale=0.55),
}
"""The synthetic layouts; their channel union is :data:`workbench.channels.SEED_62`."""


@dataclass(frozen=True)
class SignalModel:
    """Knobs of the generator (amplitudes in microvolts, rates in events per second).

    The defaults are tuned so that a band-power baseline reaches roughly 70-95 % within-subject
    and clearly less, but above chance, across subjects; ``shape_*`` set the class information
    that band power cannot see (see the module docstring).
    """

    background_uv: float = 15.0      # RMS of the pink background at a typical channel
    pink_exponent: tuple[float, float] = (1.2, 1.7)  # per-subject range of beta in 1/f^beta
    subject_scale_sd: float = 0.3    # log-normal spread of the overall amplitude across subjects
    n_background: int = 32           # background dipoles
    alpha_uv: float = 10.0           # alpha rhythm source amplitude (std)
    theta_uv: float = 5.0
    beta_uv: float = 4.0
    effect_snr: float = 0.6          # effect-source std / background std in its band
    class_strength: float = 0.65     # log-amplitude change per unit of the class pattern
    subject_strength_sd: float = 0.25  # log-normal spread of the strength across subjects
    shared_pattern: float = 0.7      # weight of the dataset-wide pattern (rest: per subject)
    band_swap_prob: float = 0.3      # chance that a subject expresses an effect in another band
    position_jitter: float = 0.1     # per-subject dipole displacement (head radius = 1)
    trial_jitter: float = 0.2        # log-amplitude noise of each effect per trial
    shape_uv: float = 8.0            # amplitude (std) of the non-sinusoidal mu source; 0 = none
    shape_harmonic: float = 0.6      # its phase-locked second harmonic, relative amplitude
    shape_phase_sd: float = 0.35     # per-subject offset (rad) of the class harmonic phases
    shape_jitter: float = 0.3        # per-trial noise (rad) of the harmonic phase
    session_gain_sd: float = 0.05    # per-channel gain change between sessions
    drift_uv: float = 5.0
    sensor_noise_uv: float = 1.5
    blink_uv: float = 120.0          # blink peak at Fp1/Fp2
    blink_rate: tuple[float, float] = (0.15, 0.4)
    muscle_uv: float = 15.0
    muscle_rate: tuple[float, float] = (0.05, 0.15)
    line_uv: float = 3.0
    line_freq: float = 50.0


# The dataset-wide class pattern: (anchor electrode, band, log-gain per class for 3 classes).
# Two-class datasets use the first and last columns (low ~ negative, high ~ positive valence).
_TEMPLATE: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("F3", "alpha", (1.0, 0.0, -1.0)),     # frontal alpha asymmetry
    ("F4", "alpha", (-1.0, 0.0, 1.0)),
    ("T7", "beta", (-1.0, 0.0, 1.0)),      # lateral temporal beta/gamma up with positive valence
    ("T8", "gamma", (-1.0, 0.0, 1.0)),
    ("Pz", "alpha", (-0.5, 1.0, -0.5)),    # relaxed (neutral) parietal alpha
    ("Fz", "theta", (0.5, -1.0, 0.5)),
)
# (centre Hz, spectral std Hz, band edges) of the narrow-band sources; alpha uses the subject's IAF.
_BANDS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "theta": (6.0, 1.0, (4.0, 8.0)),
    "alpha": (10.0, 1.0, (8.0, 14.0)),
    "beta": (20.0, 3.0, (14.0, 31.0)),
    "gamma": (38.0, 3.0, (31.0, 49.0)),
}
_GAP_S = 1.0   # silence between trials, and before the first / after the last
_N_DRIFT = 8   # slow sources behind the electrode drifts


# ----------------------------------------------------------------------------- geometry
@functools.lru_cache(maxsize=1)
def _head_sphere() -> tuple[np.ndarray, float]:
    """Centre and radius of the sphere fitted (least squares) to the SEED 62 electrodes."""
    pos = channel_positions(SEED_62)
    # |r - c|^2 = R^2  <=>  2 r.c + (R^2 - |c|^2) = |r|^2, linear in (c, d)
    a = np.c_[2 * pos, np.ones(len(pos))]
    sol, *_ = np.linalg.lstsq(a, (pos**2).sum(1), rcond=None)
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def _unit_positions(names: Sequence[str]) -> np.ndarray:
    """Electrode positions in head-radius units around the fitted centre, shape (C, 3)."""
    return _unit_positions_cached(tuple(names)).copy()


@functools.lru_cache(maxsize=64)
def _unit_positions_cached(names: tuple[str, ...]) -> np.ndarray:
    centre, radius = _head_sphere()
    return (channel_positions(names) - centre) / radius


def _dipole_field(elec: np.ndarray, pos: np.ndarray, ori: np.ndarray) -> np.ndarray:
    """Potential of current dipoles in an infinite homogeneous medium, shape (C, S).

    ``elec`` (C, 3), ``pos`` and ``ori`` (S, 3). Each column is scaled to unit RMS over the
    SEED 62 electrodes, so a source of unit std gives about unit std at a typical channel
    whatever the layout.
    """

    def field(e: np.ndarray) -> np.ndarray:
        d = e[:, None, :] - pos[None, :, :]  # (C, S, 3)
        return (d * ori[None]).sum(-1) / np.linalg.norm(d, axis=-1) ** 3

    ref = field(_unit_positions(SEED_62))
    return field(elec) / np.sqrt((ref**2).mean(0))


def _falloff_field(elec: np.ndarray, points: np.ndarray, length: float) -> np.ndarray:
    """exp(-distance / length) from non-brain generators (eyes, muscles), shape (C, S).

    Each column is scaled to a maximum of 1 over the SEED 62 electrodes.
    """

    def field(e: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(e[:, None, :] - points[None], axis=-1)  # (C, S)
        return np.exp(-d / length)

    return field(elec) / field(_unit_positions(SEED_62)).max(0)


def _anchor(name: str, depth: float, down: float = 0.0) -> np.ndarray:
    p = _unit_positions([name])[0]
    p = p / np.linalg.norm(p) * depth
    return p - np.array([0.0, 0.0, down])


# ----------------------------------------------------------------------------- time courses
def _fft_len(n: int) -> int:
    """A fast FFT length >= ``n`` (noise is drawn that long and cut to ``n`` samples)."""
    return sp_fft.next_fast_len(n, real=True)


def _colored(rng: np.random.Generator, shapes: np.ndarray, n: int) -> np.ndarray:
    """Gaussian noise with amplitude spectra ``shapes`` (S, F), unit std rows, (S, n).

    ``shapes`` is sampled at ``rfftfreq(_fft_len(n))``; the noise is cut to ``n`` samples.
    """
    # complex Gaussian coefficients, drawn only for the bins that carry power (narrow-band
    # sources need a few hundred of the ~10^4 bins); float32: speed, not precision
    keep = shapes > 1e-3 * shapes.max(axis=-1, keepdims=True)  # (S, F)
    k = int(keep.sum())
    spec = np.zeros(shapes.shape, np.complex64)
    spec[keep] = (rng.standard_normal(k, np.float32)
                  + 1j * rng.standard_normal(k, np.float32)) * shapes[keep]
    x = sp_fft.irfft(spec, n=_fft_len(n), axis=-1)[:, :n]
    return x / np.maximum(x.std(axis=-1, keepdims=True), np.finfo(np.float32).tiny)


def _pink_shape(freqs: np.ndarray, exponent: float) -> np.ndarray:
    shape = 1.0 / np.maximum(freqs, 1.0) ** (exponent / 2)  # flat below 1 Hz: drift is separate
    shape[0] = 0.0
    return shape


def _band_fraction(freqs: np.ndarray, shape: np.ndarray, lo: float, hi: float) -> float:
    power = shape**2
    return float(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum())


def _bursts(rng: np.random.Generator, n: int, sfreq: float, rate: float,
            dur: tuple[float, float], amp: float, shape: str) -> tuple[np.ndarray, int]:
    """A sparse train of smooth bumps (Gaussian blinks or Hann burst envelopes), (n,)."""
    out = np.zeros(n)
    k = rng.poisson(rate * n / sfreq)
    for _ in range(k):
        width = int(rng.uniform(*dur) * sfreq)
        a = amp * rng.lognormal(0.0, 0.25)
        t = np.arange(width)
        if shape == "gauss":
            bump = np.exp(-0.5 * ((t - width / 2) / (width / 6)) ** 2)
        else:
            bump = np.hanning(width)
        s = int(rng.integers(0, max(1, n - width)))
        out[s:s + width] += a * bump[: n - s]
    return out, int(k)


# ----------------------------------------------------------------------------- subjects
def _dataset_code(name: str) -> int:
    return zlib.crc32(name.encode())


def _subject_params(spec: SyntheticDataset, subject: int, seed: int, model: SignalModel) -> dict:
    """Everything that is fixed for a subject across sessions (a JSON-able dict)."""
    rng = np.random.default_rng([seed, _dataset_code(spec.name), subject, 0])
    cols = [0, 1, 2] if spec.n_classes == 3 else [0, 2]
    template = np.array([t[2] for t in _TEMPLATE])[:, cols]  # (E, K)
    template = template - template.mean(1, keepdims=True)
    own = rng.standard_normal(template.shape)
    own = own - own.mean(1, keepdims=True)
    own *= np.linalg.norm(template) / np.linalg.norm(own)
    pattern = model.shared_pattern * template + (1 - model.shared_pattern) * own
    iaf = float(np.clip(rng.normal(10.0, 0.8), 8.5, 12.0))
    effects = []
    for (anchor, band, _), pat in zip(_TEMPLATE, pattern):
        if rng.random() < model.band_swap_prob:
            band = str(rng.choice([b for b in _BANDS if b != band]))
        centre, width, _ = _BANDS[band]
        freq = iaf if band == "alpha" else centre + rng.uniform(-0.15, 0.15) * width * 3
        pos = _anchor(anchor, 0.65) + rng.normal(0.0, model.position_jitter, 3)
        ori = pos / np.linalg.norm(pos) + rng.normal(0.0, 0.4, 3)
        effects.append({"anchor": anchor, "band": band, "freq": float(freq), "width": width,
                        "pos": pos.tolist(), "ori": (ori / np.linalg.norm(ori)).tolist(),
                        "pattern": pat.tolist()})
    # waveform shape: a mu-like rhythm over one sensorimotor area whose harmonic phase codes
    # the class; own stream, so switching it off leaves every other parameter as it was
    srng = np.random.default_rng([seed, _dataset_code(spec.name), subject, 3])
    side = str(srng.choice(["C3", "C4"]))
    s_pos = _anchor(side, 0.6) + srng.normal(0.0, model.position_jitter, 3)
    s_ori = s_pos / np.linalg.norm(s_pos) + srng.normal(0.0, 0.3, 3)
    shape = {"anchor": side, "freq": float(np.clip(iaf + srng.normal(0.0, 0.5), 8.5, 12.5)),
             "pos": s_pos.tolist(), "ori": (s_ori / np.linalg.norm(s_ori)).tolist(),
             "phases": (2 * np.pi * np.arange(spec.n_classes) / spec.n_classes
                        + srng.normal(0.0, model.shape_phase_sd)).tolist()}
    return {
        "subject": subject,
        "scale": float(rng.lognormal(0.0, model.subject_scale_sd)),
        "pink_exponent": float(rng.uniform(*model.pink_exponent)),
        "iaf": iaf,
        "strength": float(model.class_strength * spec.effect_scale
                          * rng.lognormal(0.0, model.subject_strength_sd)),
        "rhythm_jitter": rng.normal(0.0, model.position_jitter, (5, 3)).tolist(),
        "blink_rate": float(rng.uniform(*model.blink_rate)),
        "muscle_rate": float(rng.uniform(*model.muscle_rate)),
        "effects": effects,
        "shape": shape,
    }


def _background_dipoles(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` radial dipoles on a Fibonacci lattice over the upper head, depth 0.6."""
    i = np.arange(n) + 0.5
    z = 1 - i / n * 1.2                       # from the vertex down to below the ears
    r = np.sqrt(np.clip(1 - z**2, 0, None))
    phi = np.pi * (1 + 5**0.5) * i
    ori = np.c_[r * np.cos(phi), r * np.sin(phi), z]
    return 0.6 * ori, ori


# ----------------------------------------------------------------------------- recordings
def _make_recording(spec: SyntheticDataset, subject: int, session: int, *, seed: int,
                    n_trials_per_class: int, trial_s: float, artifacts: bool,
                    model: SignalModel, params: dict) -> Recording:
    fs = spec.sfreq
    uv = 1e-6
    rng = np.random.default_rng([seed, _dataset_code(spec.name), subject, session + 1, 1])
    art_rng = np.random.default_rng([seed, _dataset_code(spec.name), subject, session + 1, 2])

    labels = rng.permutation(np.repeat(np.arange(spec.n_classes), n_trials_per_class))
    n_trials = len(labels)
    onsets = _GAP_S + np.arange(n_trials) * (trial_s + _GAP_S)
    n = int(round((onsets[-1] + trial_s + _GAP_S) * fs))
    freqs = np.fft.rfftfreq(_fft_len(n), 1 / fs).astype(np.float32)
    elec = _unit_positions(spec.ch_names)
    C = spec.n_channels

    # background: pink dipoles through a smooth lead field
    bg_pos, bg_ori = _background_dipoles(model.n_background)
    pink = _pink_shape(freqs, params["pink_exponent"])
    bg_std = model.background_uv * uv * params["scale"]
    s_bg = _colored(rng, np.broadcast_to(pink, (model.n_background, len(freqs))), n)
    s_bg *= bg_std / np.sqrt(model.n_background)

    # rhythms: alpha L/R, theta midline, beta L/R with slow amplitude envelopes
    anchors = [("PO3", "alpha", model.alpha_uv), ("PO4", "alpha", model.alpha_uv),
               ("Fz", "theta", model.theta_uv), ("C3", "beta", model.beta_uv),
               ("C4", "beta", model.beta_uv)]
    r_pos = np.array([_anchor(a, 0.6) for a, _, _ in anchors]) + np.array(params["rhythm_jitter"])
    r_ori = r_pos / np.linalg.norm(r_pos, axis=1, keepdims=True)
    r_freq = [params["iaf"] if b == "alpha" else _BANDS[b][0] for _, b, _ in anchors]
    r_shapes = np.exp(-0.5 * ((freqs[None] - np.array(r_freq)[:, None]) / 1.0) ** 2)
    slow = (freqs > 0) & (freqs < 0.5)
    env = 1 + 0.5 * _colored(rng, np.broadcast_to(slow, (len(anchors), len(freqs))) * 1.0, n)
    s_rh = _colored(rng, r_shapes, n) * np.clip(env, 0.1, None)
    s_rh *= np.array([a for _, _, a in anchors])[:, None] * uv * params["scale"]

    # class effect: narrow-band dipoles whose amplitude follows the trial's class
    eff = params["effects"]
    e_shapes = np.array([np.exp(-0.5 * ((freqs - e["freq"]) / e["width"]) ** 2) for e in eff])
    s_eff = _colored(rng, e_shapes, n)
    amp = np.array([model.effect_snr * bg_std * np.sqrt(_band_fraction(freqs, pink,
                    *_BANDS[e["band"]][2])) for e in eff])
    strength = params["strength"] * rng.lognormal(0.0, 0.1)      # session variation
    pattern = np.array([e["pattern"] for e in eff])              # (E, K)
    log_gain = np.zeros((len(eff), n), np.float32)
    for onset, lab in zip(onsets, labels):
        a = int(round(onset * fs))
        b = a + int(round(trial_s * fs))
        log_gain[:, a:b] = (strength * pattern[:, lab]
                            + rng.normal(0.0, model.trial_jitter, len(eff)))[:, None]
    log_gain = uniform_filter1d(log_gain, size=max(1, int(0.2 * fs)), axis=-1)  # 0.2 s ramps
    s_eff *= (amp[:, None] * np.exp(log_gain)).astype(np.float32)

    # electrode drifts (< 0.5 Hz): each channel a random mixture of a few slow sources
    drift_shape = np.where((freqs > 0) & (freqs < 0.5), 1 / np.maximum(freqs, 0.02), 0.0)
    s_drift = _colored(rng, np.broadcast_to(drift_shape, (_N_DRIFT, len(freqs))), n)
    drift_mix = rng.standard_normal((C, _N_DRIFT)) * model.drift_uv * uv / np.sqrt(_N_DRIFT)

    lead = np.concatenate([
        _dipole_field(elec, bg_pos, bg_ori),
        _dipole_field(elec, r_pos, r_ori),
        _dipole_field(elec, np.array([e["pos"] for e in eff]), np.array([e["ori"] for e in eff])),
        drift_mix,
    ], axis=1).astype(np.float32)  # (C, S)
    data = lead @ np.concatenate([s_bg, s_rh, s_eff, s_drift])  # (C, T)
    if model.shape_uv > 0:
        shape_rng = np.random.default_rng([seed, _dataset_code(spec.name), subject, session + 1, 3])
        sh = params["shape"]
        s_shape = _shaped_rhythm(shape_rng, freqs, n, fs, sh["freq"], np.array(sh["phases"]),
                                 onsets, labels, trial_s, model)
        s_shape *= np.float32(model.shape_uv * uv * params["scale"])
        lead_shape = _dipole_field(elec, np.array([sh["pos"]]), np.array([sh["ori"]]))
        data += lead_shape.astype(np.float32) @ s_shape[None]

    # sensor noise and session-specific channel gains
    data += np.float32(model.sensor_noise_uv * uv) * rng.standard_normal((C, n), np.float32)
    data *= (1 + model.session_gain_sd * rng.standard_normal(C)).astype(np.float32)[:, None]

    meta_art: dict = {}
    if artifacts:
        art, meta_art = _artifacts(art_rng, elec, n, fs, model, params)
        data += art

    events = make_events(onsets, trial_s, labels, [spec.class_names[k] for k in labels])
    meta = {
        "source": f"synthetic:{spec.name}/{subject:02d}/{session + 1}",
        "generator": "workbench.data.synthetic",
        "seed": seed, "n_trials_per_class": n_trials_per_class, "trial_s": trial_s,
        "gap_s": _GAP_S, "artifacts": artifacts, "signal_model": asdict(model),
        "subject_params": copy.deepcopy(params), "session_strength": strength, **meta_art,
    }
    return Recording(data=data, sfreq=fs, ch_names=list(spec.ch_names), dataset=spec.name,
                     subject=f"{subject:02d}", session=str(session + 1), recording="0",
                     events=events, label_names=spec.label_names, meta=meta)


def _shaped_rhythm(rng: np.random.Generator, freqs: np.ndarray, n: int, fs: float, f0: float,
                   phases: np.ndarray, onsets: np.ndarray, labels: np.ndarray, trial_s: float,
                   model: SignalModel) -> np.ndarray:
    """A non-sinusoidal rhythm whose waveform shape, not its spectrum, follows the class, (n,).

    With the analytic narrow-band process ``z = A exp(i phi)`` at ``f0``, the rhythm is
    ``A cos(phi) + h A cos(2 phi + psi)``: a fundamental plus a phase-locked second harmonic
    of relative amplitude ``h``. The harmonic phase ``psi`` sets the shape (0: sharp peaks and
    broad troughs, pi: the reverse, +-pi/2: fast rise and slow decay or the reverse) and takes
    the class's value during a trial (plus per-trial noise) and a random one in the gaps. The
    power spectrum and every covariance are the same for any ``psi``: band power cannot tell
    the classes apart; skewness and other higher-order statistics can.
    Unit std overall.
    """
    h = model.shape_harmonic
    x = _colored(rng, np.exp(-0.5 * ((freqs - f0) / 0.7) ** 2)[None], n)[0].astype(np.float64)
    z = sp_signal.hilbert(x)
    gap_phase = rng.uniform(0, 2 * np.pi, len(onsets) + 1)  # before, between, after trials
    psi = np.full(n, gap_phase[0])
    starts = [int(round(o * fs)) for o in onsets]
    for k, (a, lab) in enumerate(zip(starts, labels)):
        b = a + int(round(trial_s * fs))
        psi[a:b] = phases[lab] + rng.normal(0.0, model.shape_jitter)
        psi[b:starts[k + 1] if k + 1 < len(starts) else n] = gap_phase[k + 1]
    u = np.exp(1j * psi)
    size = max(1, int(0.2 * fs))  # 0.2 s transitions, as for the amplitude effects
    u = uniform_filter1d(u.real, size) + 1j * uniform_filter1d(u.imag, size)
    u /= np.maximum(np.abs(u), 1e-6)
    mag = np.maximum(np.abs(z), 1e-12)
    out = x + h * (u * z**2 / mag).real
    return (out / np.sqrt(1 + h**2)).astype(np.float32)


def _artifacts(rng: np.random.Generator, elec: np.ndarray, n: int, fs: float,
               model: SignalModel, params: dict) -> tuple[np.ndarray, dict]:
    """Blinks, muscle bursts and line noise at the electrodes, (C, T), and their counts."""
    uv = 1e-6
    # eye blinks: sparse Gaussian bumps (200-400 ms) from two points below Fp1/Fp2
    blink, n_blinks = _bursts(rng, n, fs, params["blink_rate"], (0.2, 0.4), model.blink_uv * uv,
                              "gauss")
    eyes = np.array([_anchor("Fp1", 1.0, down=0.3), _anchor("Fp2", 1.0, down=0.3)])
    blink_topo = _falloff_field(elec, eyes, 0.45).sum(1)  # (C,)
    blink_topo /= _falloff_field(_unit_positions(SEED_62), eyes, 0.45).sum(1).max()
    # muscle: 20-90 Hz noise under a bursty envelope, left and right temporalis
    hf = np.fft.rfftfreq(_fft_len(n), 1 / fs)
    hf_shape = ((hf > 20) & (hf < min(90.0, 0.45 * fs))).astype(float)
    muscle = _colored(rng, np.broadcast_to(hf_shape, (2, len(hf))), n)
    env_l, k_l = _bursts(rng, n, fs, params["muscle_rate"], (0.3, 1.5), model.muscle_uv * uv,
                         "hann")
    env_r, k_r = _bursts(rng, n, fs, params["muscle_rate"], (0.3, 1.5), model.muscle_uv * uv,
                         "hann")
    muscle *= np.stack([env_l, env_r])
    temporal = np.array([_anchor("T7", 1.0, down=0.15), _anchor("T8", 1.0, down=0.15)])
    muscle_topo = _falloff_field(elec, temporal, 0.2)  # (C, 2)
    # line noise: a sinusoid with channel-specific amplitude and phase,
    # a_c sin(wt + p_c) = a_c cos(p_c) sin(wt) + a_c sin(p_c) cos(wt)
    wt = 2 * np.pi * model.line_freq * np.arange(n) / fs
    phase = rng.uniform(0, 2 * np.pi) + rng.normal(0.0, 0.3, len(elec))
    line_amp = model.line_uv * uv * rng.uniform(0.5, 1.5, len(elec))
    mix = np.c_[blink_topo, muscle_topo, line_amp * np.cos(phase), line_amp * np.sin(phase)]
    art = mix @ np.stack([blink, muscle[0], muscle[1], np.sin(wt), np.cos(wt)])  # (C, T)
    return art, {"n_blinks": n_blinks, "n_muscle_bursts": k_l + k_r}


def make_synthetic_recordings(dataset: str = "syn_seed", n_subjects: int = 4,
                              n_sessions: int = 2, n_trials_per_class: int = 12,
                              trial_s: float = 4.0, seed: int = 0, artifacts: bool = True,
                              model: SignalModel | None = None) -> list[Recording]:
    """Synthetic recordings of one dataset: one :class:`Recording` per subject and session.

    Trials of ``trial_s`` seconds follow each other with 1 s gaps, in a shuffled class order per
    session, and are the recording's events (``label`` = class, ``description`` = class name).

    Parameters
    ----------
    dataset : str
        A key of :data:`SYNTHETIC_DATASETS`.
    n_subjects, n_sessions, n_trials_per_class : int
        Corpus size; every session holds ``n_trials_per_class`` trials of every class.
    trial_s : float
        Trial length in seconds.
    seed : int
        Same seed, identical arrays; another seed, other subjects and other signals.
    artifacts : bool
        Add eye blinks, muscle bursts and line noise.
    model : SignalModel, optional
        Generator knobs; the defaults when omitted.

    Returns
    -------
    list of Recording
        Subjects ``"01"``, ``"02"``...; sessions ``"1"``, ``"2"``...; data in volts.
    """
    check_option("dataset", dataset, SYNTHETIC_DATASETS)
    for name, v in (("n_subjects", n_subjects), ("n_sessions", n_sessions),
                    ("n_trials_per_class", n_trials_per_class), ("trial_s", trial_s)):
        check_positive(name, v)
    spec = SYNTHETIC_DATASETS[dataset]
    model = model or SignalModel()
    out = []
    for subj in range(1, n_subjects + 1):
        params = _subject_params(spec, subj, seed, model)
        for sess in range(n_sessions):
            out.append(_make_recording(spec, subj, sess, seed=seed,
                                       n_trials_per_class=n_trials_per_class, trial_s=trial_s,
                                       artifacts=artifacts, model=model, params=params))
    logger.debug("synthetic %s: %d recordings of %d channels at %g Hz", dataset, len(out),
                 spec.n_channels, spec.sfreq)
    return out


def make_synthetic_corpus(datasets: Sequence[str] = tuple(SYNTHETIC_DATASETS),
                          **kwargs) -> dict[str, list[Recording]]:
    """:func:`make_synthetic_recordings` for several datasets (same keyword arguments)."""
    return {name: make_synthetic_recordings(name, **kwargs) for name in datasets}
