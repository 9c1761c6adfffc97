"""Data-loading throughput: our WindowStore + DataLoader vs braindecode's windowing pipeline.

Prints, in one run on the same recordings, windows per second of

* ours: ``WindowStore`` (float32 memmap, one sorted slicing call per batch through
  ``__getitems__``) + ``torch.utils.data.DataLoader`` (``num_workers=0``), one full epoch;
* braindecode: ``preprocess`` (pick EEG) + ``create_windows_from_events`` + DataLoader
  (``num_workers=0``), one full epoch (its windowing is lazy unless preloaded: both modes are
  timed),

and their ratio. The store is built once (a cached, one-time cost, also printed). Recordings:
EEGMMIDB S001 (all 14 runs) from ``../shared/data`` when present, else the synthetic corpus.

Run: ``python benchmarks/bench_loading.py [--data DIR] [--batch-size 64] [--repeats 3]``.
Needs the ``bench`` extra (braindecode 0.8.1; see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from workbench.data.datasets import WindowDataset, make_loader
from workbench.data.recording import Recording, make_events
from workbench.data.store import build_store

WINDOW_S, STRIDE_S = 2.0, 0.5


def _shared_data(arg: str | None) -> Path | None:
    p = Path(arg) if arg else Path(__file__).resolve().parents[2] / "shared" / "data"
    return p if (p / "eegmmidb" / "S001").is_dir() else None


def load_raws(data: Path | None):
    import mne

    if data is None:
        from workbench.data.synthetic import make_synthetic_recordings

        recs = make_synthetic_recordings("syn_deap", n_subjects=4, n_sessions=2, seed=0)
        return [r.to_raw() for r in recs], "synthetic syn_deap (8 recordings)"
    files = sorted((data / "eegmmidb" / "S001").glob("S001R*.edf"))
    raws = [mne.io.read_raw_edf(f, preload=True, verbose="error") for f in files]
    return raws, f"EEGMMIDB S001 ({len(files)} runs)"


def raw_to_recording(raw, i: int) -> Recording:
    ann = raw.annotations
    codes = {d: k for k, d in enumerate(sorted(set(ann.description)))}
    ev = make_events(ann.onset, ann.duration, [codes[d] for d in ann.description], ann.description)
    return Recording(raw.get_data(), raw.info["sfreq"], raw.ch_names, "bench", "1",
                     recording=str(i), events=ev)


def epoch_throughput(loader, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        for batch in loader:
            x = batch["x"] if isinstance(batch, dict) else batch[0]
            n += len(x)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_ours(raws, batch_size: int, repeats: int, root: Path) -> tuple[float, float, int]:
    recs = [raw_to_recording(r, i) for i, r in enumerate(raws)]
    t0 = time.perf_counter()
    store = build_store(recs, root / "store", window_s=WINDOW_S, overlap_s=WINDOW_S - STRIDE_S)
    build_s = time.perf_counter() - t0
    loader = make_loader(WindowDataset(store), batch_size, shuffle=True, seed=0)
    return epoch_throughput(loader, repeats), build_s, len(store)


def bench_braindecode(raws, batch_size: int, repeats: int, preload: bool) -> tuple[float, int]:
    from braindecode.datasets import BaseConcatDataset, BaseDataset
    from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess

    best = 0.0
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = BaseConcatDataset([BaseDataset(r.copy(), target_name=None) for r in raws])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preprocess(ds, [Preprocessor("pick", picks="eeg")])
            sf = raws[0].info["sfreq"]
            win = create_windows_from_events(
                ds, trial_start_offset_samples=0, trial_stop_offset_samples=0,
                window_size_samples=int(WINDOW_S * sf), window_stride_samples=int(STRIDE_S * sf),
                drop_last_window=True, preload=preload)
        loader = torch.utils.data.DataLoader(win, batch_size=batch_size, shuffle=True,
                                             num_workers=0)
        n = sum(len(b[0]) for b in loader)
        best = max(best, n / (time.perf_counter() - t0))
    return best, n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding eegmmidb/S001 (../shared/data)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    raws, what = load_raws(_shared_data(args.data))
    print(f"recordings: {what}; windows {WINDOW_S} s, stride {STRIDE_S} s, batch "
          f"{args.batch_size}, num_workers=0")
    with tempfile.TemporaryDirectory() as tmp:
        ours, build_s, n_ours = bench_ours(raws, args.batch_size, args.repeats, Path(tmp))
    try:
        bd_lazy, n_bd = bench_braindecode(raws, args.batch_size, args.repeats, preload=False)
        bd_pre, _ = bench_braindecode(raws, args.batch_size, args.repeats, preload=True)
    except ImportError as e:
        raise SystemExit(f"braindecode is not importable ({e}); install the bench extra: "
                         "pip install -e '.[bench]' (see benchmarks/README.md)") from None
    print(f"{'pipeline':<44}{'windows':>9}{'windows/s':>14}")
    print(f"{'ours: WindowStore + DataLoader (epoch)':<44}{n_ours:>9}{ours:>14,.0f}")
    print(f"{'braindecode, lazy windows (pre+win+epoch)':<44}{n_bd:>9}{bd_lazy:>14,.0f}")
    print(f"{'braindecode, preloaded (pre+win+epoch)':<44}{n_bd:>9}{bd_pre:>14,.0f}")
    print(f"one-time store build: {build_s:.2f} s ({n_ours / build_s:,.0f} windows/s)")
    best_bd = max(bd_lazy, bd_pre)
    ratio = ours / best_bd
    print(f"ratio ours / best braindecode: {ratio:.1f}x (target >= 5x) -> "
          f"{'PASS' if ratio >= 5 else 'FAIL'}")


if __name__ == "__main__":
    main()
