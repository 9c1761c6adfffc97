"""Preprocessing throughput: our pipeline vs a plain MNE script doing the same steps.

Prints, in one run on the same recordings, seconds per recording of

* ours: :func:`workbench.data.preprocess.run_pipeline` with ``n_jobs=2``, ICA by picard
  (extended, ``ortho=False``), no cache, one BLAS thread per worker, windows written to a store;
* plain MNE: a sequential script with the same steps (EEG picks, template montage, flat-channel
  interpolation, average reference, notch/band-pass, extended-infomax ICA fitted on a 1-100 Hz
  copy, ICLabel, exclusion of every non-brain component, resampling, fixed-length epochs) and
  MNE's default threading,

and the speedup (plain / ours), in wall-clock time and in CPU time (this process and its
workers: on a machine busy with other work, parallel workers cannot show their wall-clock gain
and the CPU time says how much work each pipeline does). Both use the ``omfa`` recipe (1-49 Hz, native rate, 2 s windows
with 0.2 s overlap). Recordings: EEGMMIDB S001 runs from ``../shared/data`` (or ``--data``) when
present, else the synthetic corpus. The imports of MNE, mne-icalabel and torch are warmed up
before timing; ours includes starting its worker processes.

Run: ``python benchmarks/bench_preprocess.py [--data DIR] [--n-recordings 6]``. Timings depend
on what else runs on the machine: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.channels import make_montage, normalize_channel_name  # noqa: E402
from workbench.data.preprocess import PreprocessConfig, get_recipe, run_pipeline  # noqa: E402
from workbench.data.recording import Recording  # noqa: E402


def plain_mne_preprocess(rec: Recording, cfg: PreprocessConfig, method: str = "infomax"):
    """The pipeline's steps written as a plain MNE script (the reference twin).

    Returns the cleaned ``mne.io.Raw`` (EEG only) and the list of excluded component labels.
    Used by the benchmark (``method="infomax"``) and by the tests (``method="picard"``, which
    must reproduce :func:`workbench.data.preprocess.preprocess_recording`).
    """
    from mne.preprocessing import ICA
    from mne_icalabel import label_components

    raw = rec.to_raw()
    raw.set_channel_types({n: t for n, t in cfg.channel_types.items() if n in raw.ch_names},
                          verbose="error")
    raw.pick("eeg")
    montage = make_montage(raw.ch_names, cfg.montage)
    montage.rename_channels({normalize_channel_name(n): n for n in raw.ch_names})
    raw.set_montage(montage, verbose="error")
    nyq = raw.info["sfreq"] / 2
    lo, hi = cfg.ica_fit_band or (cfg.l_freq, cfg.h_freq)
    fit = raw.copy().filter(lo, hi if hi and hi < 0.9 * nyq else None, verbose="error")
    sd = fit.get_data().std(axis=1)
    live = sd >= cfg.flat_std
    ratio = sd / np.median(sd[live])
    bads = [n for n, s, r in zip(raw.ch_names, sd, ratio)
            if s < cfg.flat_std or r > cfg.bad_ratio or r < 1 / cfg.bad_ratio]
    rank = len(raw.ch_names) - len(bads) - 1
    for r in (raw, fit):
        if bads:
            r.info["bads"] = bads
            r.interpolate_bads(reset_bads=True, verbose="error")
        r.set_eeg_reference("average", projection=False, verbose="error")
    if cfg.notch:
        raw.notch_filter(cfg.notch, verbose="error")
    h = cfg.h_freq if cfg.h_freq and cfg.h_freq < 0.9 * nyq else None
    raw.filter(cfg.l_freq, h, verbose="error")
    excluded: list[str] = []
    if cfg.ica:
        fit_params = {"ortho": False, "extended": True} if method == "picard" else {
            "extended": True}
        ica = ICA(n_components=rank, method=method, fit_params=fit_params,
                  max_iter=cfg.ica_max_iter, random_state=cfg.seed, verbose="error")
        ica.fit(fit, verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = label_components(fit, ica, method="iclabel")["labels"]
        exclude = [i for i, lab in enumerate(labels) if lab not in cfg.keep_classes]
        excluded = [labels[i] for i in exclude]
        ica.apply(raw, exclude=exclude, verbose="error")
    if cfg.resample and cfg.resample != raw.info["sfreq"]:
        raw.resample(cfg.resample, verbose="error")
    return raw, excluded


def plain_mne_script(recordings: list[Recording], cfg: PreprocessConfig) -> int:
    """Sequential plain-MNE processing with infomax; returns the number of epochs."""
    import mne

    n = 0
    for rec in recordings:
        raw, _ = plain_mne_preprocess(rec, cfg, method="infomax")
        epochs = mne.make_fixed_length_epochs(raw, duration=cfg.window_s, overlap=cfg.overlap_s,
                                              verbose="error")
        x = epochs.get_data(copy=False) * 1e6  # (n, C, T), microvolts like the store
        n += len(x)
    return n


def load_recordings(data: Path | None, n: int) -> tuple[list[Recording], str]:
    if data is not None and (data / "eegmmidb" / "S001").is_dir():
        from workbench.data.readers import get_reader

        reader = get_reader("eegmmidb")  # the six motor-imagery runs (R04, R06 ... R14)
        files = reader.list_files(data / "eegmmidb", task="4class")[:n]
        recs = [r for f in files for r in reader.read_file(f, task="4class")]
        return recs, f"EEGMMIDB S001, {len(recs)} imagery runs (64 ch, 160 Hz, 125 s)"
    from workbench.data.synthetic import make_synthetic_recordings

    recs = make_synthetic_recordings("syn_deap", n_subjects=max(1, n // 2), n_sessions=2,
                                     n_trials_per_class=12, seed=0)[:n]
    return recs, f"synthetic syn_deap, {len(recs)} recordings (32 ch, 128 Hz)"


def _warm_up() -> None:
    import mne_icalabel.iclabel.network  # noqa: F401
    import torch  # noqa: F401


def main(argv: list[str] | None = None) -> dict[str, float]:
    import mne

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("WORKBENCH_SHARED_DATA"),
                   help="folder holding eegmmidb/S001 (default ../shared/data)")
    p.add_argument("--n-recordings", type=int, default=6)
    p.add_argument("--n-jobs", type=int, default=2)
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else Path(__file__).resolve().parents[2] / "shared" / "data"
    recs, what = load_recordings(data if data.is_dir() else None, args.n_recordings)
    cfg = get_recipe("omfa")
    _warm_up()
    mne.set_log_level("ERROR")
    print(f"recordings: {what}; recipe omfa (1-49 Hz, ICA + ICLabel, 2 s windows, 0.2 s overlap)")
    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), _cpu_seconds()
        res = run_pipeline(recs, cfg=get_recipe("omfa", ica_method="picard"), out_dir=tmp,
                           n_jobs=args.n_jobs, cache=False)
        ours = (time.perf_counter() - t0) / len(recs)
        _stop_workers()  # so that the workers' CPU time is accounted to this process
        ours_cpu = (_cpu_seconds() - c0) / len(recs)
    excl = sum(len(str(x).split(";")) if x else 0 for x in res.reports["excluded"])
    print(f"ours  (run_pipeline, n_jobs={args.n_jobs}, picard): {ours:7.2f} s/recording "
          f"(CPU {ours_cpu:.2f} s; {len(res.store)} windows, {excl} components excluded, "
          f"{len(res.failures)} failures)")

    t0, c0 = time.perf_counter(), _cpu_seconds()
    n_epochs = plain_mne_script(recs, cfg)
    plain = (time.perf_counter() - t0) / len(recs)
    plain_cpu = (_cpu_seconds() - c0) / len(recs)
    print(f"plain MNE script (sequential, extended infomax): {plain:7.2f} s/recording "
          f"(CPU {plain_cpu:.2f} s; {n_epochs} epochs)")
    print(f"speedup: {plain / ours:.2f}x wall-clock, {plain_cpu / ours_cpu:.2f}x CPU time "
          f"(load average at end {os.getloadavg()[0]:.1f})")
    return {"ours_s_per_recording": ours, "plain_s_per_recording": plain,
            "speedup": plain / ours, "cpu_speedup": plain_cpu / ours_cpu}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def _stop_workers() -> None:
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
