"""The words a notebook closes with: its outcome, generated from the metrics it recorded.

Every stage notebook ends with ``display(Markdown(outcome(run_name, metrics)))``, so the
conclusion a reader sees is computed from the same numbers the tests assert and the report
shows, never typed by hand. :func:`outcome` dispatches on the notebook stem (``04_finetune`` of
``04_finetune__omfa``) to a describer registered with :func:`register_outcome`; a notebook
without one gets its metrics listed. :class:`RunWatch` says which runs a notebook found and which
it had to train.

What each sentence compares with is what the paper claims and what the embedded corpus was
built to show (README, "The embedded corpus"): class information in band power (which the DE
baseline reads) and in waveform shape (which only a model of the raw signal can use), subject
patterns partly their own (cross-subject below within-subject).

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms" (UCS, GAT connectivity, ablations).
.. [2] "EEGM2: An Efficient Mamba-2-Based Self-Supervised Framework for Long-Sequence EEG
       Modeling" (linear cost in the sequence length, reconstruction pre-training).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..runs import RunFolder, RunLayout, project_root

__all__ = ["RunWatch", "map_caption", "outcome", "register_outcome"]

Describer = Callable[[Mapping[str, Any]], list[str]]
_DESCRIBERS: dict[str, Describer] = {}
MARGIN = 0.05  # accuracy points that count as "above" rather than "about the same"
NEAR_UNIFORM_RATIO = 1.5  # attention whose largest mean weight is under 1.5x the smallest
CHANCE_ARI = 0.05  # adjusted Rand index below which clusters match the classes no better than chance


def register_outcome(stem: str) -> Callable[[Describer], Describer]:
    """Register ``fn(metrics) -> list of sentences`` as the outcome of notebook ``stem``."""
    def deco(fn: Describer) -> Describer:
        _DESCRIBERS[stem] = fn
        return fn
    return deco


def outcome(run_name: str, metrics: Mapping[str, Any]) -> str:
    """The outcome of a notebook run in words (Markdown), from the metrics it recorded.

    Parameters
    ----------
    run_name : str
        ``NN_name`` or ``NN_name__tag`` (the describer is chosen by ``NN_name``).
    metrics : mapping
        What the notebook recorded (``record_metrics`` returns it).
    """
    stem = run_name.split("__")[0]
    fn = _DESCRIBERS.get(stem)
    lines = fn(metrics) if fn else [
        "Recorded: " + ", ".join(f"{k} = {_num(v)}" for k, v in metrics.items()) + "."]
    return f"**Outcome ({run_name})**\n\n" + "\n".join(f"- {s}" for s in lines if s)


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def _p(p: float) -> str:
    """``p = 0.012``, ``p < 0.001`` or ``p n/a``."""
    if p is None or not math.isfinite(p):
        return "p n/a"
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def _vs(x: float, ref: float, margin: float = MARGIN) -> str:
    """'above', 'below' or 'about the same as' ``ref``."""
    if x > ref + margin:
        return "above"
    if x < ref - margin:
        return "below"
    return "about the same as"


_BETTER = {"above": "better than", "below": "worse than", "about the same as": "about as well as"}


def _chance(m: Mapping[str, Any], key: str = "n_classes") -> float | None:
    n = m.get(key)
    return 1.0 / n if n else None


def _suffixes(m: Mapping[str, Any], prefix: str) -> list[str]:
    return [k[len(prefix):] for k in m if k.startswith(prefix)]


# ----------------------------------------------------------------------------- 00 - 02
@register_outcome("00_data")
def _data(m: Mapping[str, Any]) -> list[str]:
    out = []
    if "ucs_size" in m:
        out.append(f"The {m.get('n_datasets', '')} datasets share {m['intersection_size']} "
                   f"channels (their intersection); their union, the Unified Channel Schema, has "
                   f"{m['ucs_size']}: a model on the intersection would drop "
                   f"{m['ucs_size'] - m['intersection_size']} channels the UCS keeps.")
    for d in _suffixes(m, "class_difference_p_"):
        p, n = m[f"class_difference_p_{d}"], m.get(f"class_difference_channels_{d}", 0)
        seen = p <= 0.05
        text = (f"{d}: the band-power class difference (largest {_num(m.get(f'max_abs_class_difference_{d}', float('nan')))}"
                f" log10 units) is {'above chance' if seen else 'not distinguishable from chance'}"
                f" (permutation test over trials within subjects, max over channels: "
                f"{_p(p)}; {n} channels significant)")
        if f"skewness_difference_p_{d}" in m:
            ps = m[f"skewness_difference_p_{d}"]
            text += (f"; the waveform-shape (skewness) difference of one subject is "
                     f"{'above chance' if ps <= 0.05 else 'not distinguishable from chance'} "
                     f"({_p(ps)}, {m.get(f'skewness_difference_channels_{d}', 0)} channels)")
        out.append(text + ".")
    if any(k.startswith("class_difference_p_") for k in m):
        both = all(m[k] <= 0.05 for k in m if k.startswith(("class_difference_p_",
                                                              "skewness_difference_p_")))
        out.append("The embedded corpus puts class information both in band power and in "
                   "waveform shape; " + ("both maps show it above chance, as built." if both else
                                         "a map that is not above chance shows no class effect "
                                         "there: read it as noise, not as a pattern."))
    return out


@register_outcome("01_preprocess")
def _preprocess(m: Mapping[str, Any]) -> list[str]:
    n, failed = m.get("n_recordings", 0), m.get("n_failures", 0)
    out = [f"{n} recordings cleaned with the {m.get('recipe', '')} recipe, {failed} failed."]
    if m.get("n_components"):
        out.append(f"ICA found {m['n_components']} components; ICLabel excluded "
                   f"{m.get('n_excluded', 0)} ({100 * m.get('n_excluded', 0) / m['n_components']:.0f} %)"
                   f", and an eye-blink component in {m.get('recordings_with_blink_excluded', 0)} of "
                   f"{n} recordings (the synthetic corpus carries blinks on the frontal channels, "
                   "so finding them is what ICA + ICLabel should do).")
    if "power_reduction_db_49_51hz" in m:
        out.append(f"Power at 49-51 Hz (line noise) changed by {_num(m['power_reduction_db_49_51hz'])} dB.")
    if "cached_rerun_all_from_cache" in m:
        out.append("A second run with the same inputs came " + (
            "entirely from the cache." if m["cached_rerun_all_from_cache"] else
            "partly recomputed: the cache did not serve every recording."))
    return out


@register_outcome("02_baselines")
def _baselines(m: Mapping[str, Any]) -> list[str]:
    out, gaps = [], []
    for d in _suffixes(m, "within_subject_accuracy_"):
        w = m[f"within_subject_accuracy_{d}"]
        c = m.get(f"cross_subject_accuracy_{d}")
        chance = _chance(m, f"n_classes_{d}")
        text = f"{d}: within-subject accuracy {_num(w)}"
        if c is not None:
            text += f", cross-subject {_num(c)}"
            gaps.append(w - c)
        if chance:
            text += f" (chance {_num(chance)}: within-subject is {_vs(w, chance)} chance)"
        out.append(text + ".")
    if gaps:
        mean_gap = sum(gaps) / len(gaps)
        out.append(f"Band power loses {100 * mean_gap:.0f} accuracy points on average from within- "
                   "to cross-subject: " + (
                       "each subject's class pattern is partly its own, as the corpus was built "
                       "(and as the seed papers report for real EEG)." if mean_gap > 0 else
                       "no loss across subjects, unlike what the corpus was built to show."))
    if m.get("n_confounded_splits"):
        out.append(f"{m['n_confounded_splits']} splits could only measure recording identity "
                   "(each recording holds one label): read the cross-subject rows for them.")
    return out


# ----------------------------------------------------------------------------- 03 - 05
@register_outcome("03_pretrain")
def _pretrain(m: Mapping[str, Any]) -> list[str]:
    first, last = m.get("loss_first"), m.get("loss_last")
    if first is None or last is None:
        return []
    fell = last < first
    out = [f"{m.get('method', '')} pre-training ({m.get('variant', '')}): the loss went from "
           f"{_num(first)} to {_num(last)} ({100 * (last - first) / abs(first or 1):+.0f} %); "
           + ("the objective is being learned." if fell else
              "it did not fall: train longer (profile 'paper') or check the learning rate.")]
    if m.get("val_loss_last") is not None:
        out.append(f"Validation loss at the end: {_num(m['val_loss_last'])}.")
    if m.get("parameters"):
        out.append(f"{m['parameters']:,} parameters, {_num(m.get('samples_per_s', float('nan')))}"
                   " windows per second.")
    return out


@register_outcome("04_finetune")
def _finetune(m: Mapping[str, Any]) -> list[str]:
    if "accuracy" not in m:
        return []
    acc, chance = m["accuracy"], _chance(m)
    out = [f"{m.get('method', '')} ({m.get('variant', '')}, mode {m.get('mode', '')}) on "
           f"{m.get('dataset', '')} under {m.get('protocol', '')} ({m.get('n_folds', '?')} folds):"
           f" accuracy {_num(acc)}" + (f", chance {_num(chance)}" if chance else "") + "."]
    if "baseline_accuracy" in m:
        base = m["baseline_accuracy"]
        out.append(f"The DE band-power baseline on the same folds: {_num(base)}; the model is "
                   f"{_vs(acc, base)} it. " + (
                       "The corpus keeps part of the class in waveform shape, which band power "
                       "cannot see, so a model of the raw signal can beat it."
                       if acc > base + MARGIN else
                       "A model of the raw signal could use the waveform-shape part of the class "
                       "that band power misses; here it does not (yet)."))
    if "scratch_accuracy" in m:
        s = m["scratch_accuracy"]
        out.append(f"The same architecture from scratch: {_num(s)}; pre-training is "
                   f"{'worth' if acc > s + MARGIN else 'not clearly worth'} "
                   f"{100 * (acc - s):+.0f} points here.")
    if (m.get("n_folds") or 0) <= 3:
        out.append("With this few folds, differences of a few points are within the noise.")
    if m.get("n_confounded_folds"):
        out.append(f"{m['n_confounded_folds']} test folds could only measure recording identity.")
    return out


@register_outcome("05_ablations")
def _ablations(m: Mapping[str, Any]) -> list[str]:
    acc = {v: m[f"accuracy_{v}"] for v in _suffixes(m, "accuracy_") if m[f"accuracy_{v}"] is not None}
    out = []
    if acc:
        ranked = sorted(acc, key=acc.get, reverse=True)
        out.append("Variants by accuracy: " + ", ".join(f"{v} {_num(acc[v])}" for v in ranked) + ".")
        full = m.get("default_variant")
        if full in acc and len(acc) > 1:
            rank = ranked.index(full) + 1
            out.append(f"The full model ({full}) ranks {rank} of {len(ranked)}: the paper's "
                       f"claim that each component helps " + (
                           "holds here." if rank == 1 else
                           f"does not hold on this data ({ranked[0]} is best); on the small "
                           "smoke corpus orderings within a few points are noise."))
    tr = {k: m[f"transfer_accuracy_{k}"] for k in _suffixes(m, "transfer_accuracy_")}
    if {"ucs", "intersection"} <= set(tr):
        out.append(f"Cross-dataset transfer: UCS {_num(tr['ucs'])} vs channel intersection "
                   f"{_num(tr['intersection'])} (the UCS is {_vs(tr['ucs'], tr['intersection'])} "
                   "the intersection; the paper reports 93.05 % vs 94.08 % on DREAMER, i.e. "
                   "about the same).")
    return out


# ----------------------------------------------------------------------------- 06 - 09
@register_outcome("06_embeddings")
def _embeddings(m: Mapping[str, Any]) -> list[str]:
    out = []
    if "ari_pre-trained" in m and "ari_scratch" in m:
        p, s = m["ari_pre-trained"], m["ari_scratch"]
        if max(p, s) < CHANCE_ARI:
            verdict = "neither encoder separates the classes better than chance."
        elif p > s + MARGIN:
            verdict = "pre-training made the classes more separable."
        else:
            verdict = "pre-training made the classes no more separable than a random encoder does."
        out.append(f"Subject {m.get('subject', '')}: K-means on the pre-trained features recovers "
                   f"the classes with ARI {_num(p)}, on the randomly initialised ones {_num(s)} "
                   f"(0: chance, 1: perfect); {verdict}")
    if "subject_ari_pre-trained" in m and "subject_ari_scratch" in m:
        p, s = m["subject_ari_pre-trained"], m["subject_ari_scratch"]
        out.append(f"Clustering by subject: ARI {_num(p)} pre-trained vs {_num(s)} random; "
                   + ("the pre-trained map separates subjects less, as hoped."
                      if p < s - MARGIN else "subject identity is not reduced."))
    return out


@register_outcome("07_gat_connectivity")
def _connectivity(m: Mapping[str, Any]) -> list[str]:
    out = []
    ratio = m.get("max_min_ratio", float("nan"))
    uniform = bool(m.get("attention_uniform"))
    near = uniform or ratio < NEAR_UNIFORM_RATIO
    if "kl_from_uniform" in m:
        shape = ("indistinguishable from uniform" if uniform else
                 "close to uniform" if near else "far from uniform")
        out.append(f"Subject {m.get('subject', '')}, {m.get('n_test_windows', '?')} test windows: "
                   f"the attention is {shape} (the largest mean weight is {_num(ratio)}x the "
                   f"smallest; KL from uniform {_num(m['kl_from_uniform'])} nats).")
    if "class_difference_p" in m:
        p = m["class_difference_p"]
        differ = p is not None and math.isfinite(p) and p <= 0.05
        out.append(f"The classes' attention {'differs' if differ else 'does not differ'} beyond "
                   f"chance (permutation test over windows: {_p(p)}).")
        if uniform or not differ:
            out.append("So the edges drawn per class are not a finding: the paper's per-class "
                       "key channels need attention that departs from uniform and differs "
                       "between classes.")
        elif near:
            out.append("The difference is real but small: the drawn edges rank nearly equal "
                       "weights, so read the key channels as weak tendencies, not as strong "
                       "connectivity.")
        else:
            out.append("The per-class edges and key channels reflect a real difference in "
                       "what the model attends to.")
    return out


@register_outcome("08_efficiency")
def _efficiency(m: Mapping[str, Any]) -> list[str]:
    out = []
    for spec in _suffixes(m, "length_ratio_"):
        L, mem = m[f"length_ratio_{spec}"], m.get(f"memory_ratio_{spec}")
        t = m.get(f"time_ratio_{spec}")
        if mem is None:
            continue
        grows = ("at most linearly" if mem <= 1.5 * L else "faster than linearly")
        out.append(f"{spec}: over a {_num(L)}x longer input, peak memory grew {_num(mem)}x"
                   + (f" and time {_num(t)}x" if t is not None else "") + f" ({grows}).")
    if out:
        out.append("EEGM2 claims linear cost in the sequence length; quadratic attention should "
                   "grow faster.")
    return out


@register_outcome("09_reconstruction")
def _reconstruction(m: Mapping[str, Any]) -> list[str]:
    out = []
    if "mean_corr" in m:
        out.append(f"Reconstructions correlate {_num(m['mean_corr'])} with the original windows "
                   f"on average (mean absolute error {_num(m.get('mean_l1', float('nan')))}); "
                   + ("the model reproduces the signal closely." if m["mean_corr"] > 0.8 else
                      "the model reproduces part of the signal." if m["mean_corr"] > 0.5 else
                      "a weak reconstruction: pre-train longer (profile 'paper')."))
    if "ari_raw" in m and "ari_learned" in m:
        r, f = m["ari_raw"], m["ari_learned"]
        out.append(f"K-means recovers the classes with ARI {_num(r)} from nine raw statistics per "
                   f"channel and {_num(f)} from {m.get('method', 'the')} features: " + (
                       "neither separates the classes better than chance." if
                       max(r, f) < CHANCE_ARI else f"the learned features separate the classes "
                       f"{_BETTER[_vs(f, r)]} the raw statistics."))
    return out


@register_outcome("11_benchmark")
def _benchmark(m: Mapping[str, Any]) -> list[str]:
    out = []
    for suite in m.get("suites_run", []):
        r = m.get(suite, {})
        ours, pub, chance = r.get("ours", {}), r.get("published", {}), r.get("chance")
        if not ours:
            out.append(f"{suite}: no run finished ({r.get('failures', 0)} failed).")
            continue
        best = max(ours, key=ours.get)
        above = [k for k, v in ours.items() if chance is not None and v > chance + MARGIN]
        text = (f"{suite} ({r.get('subjects')} subjects, {r.get('metric', 'metric')}): best of "
                f"ours {best} {_num(ours[best])}; {len(above)} of {len(ours)} runs more than "
                f"{MARGIN} above chance {_num(chance)}")
        if pub:
            text += f"; published {_num(min(pub.values()))}-{_num(max(pub.values()))}"
        text += (". The published protocol: comparable." if r.get("exact") else
                 f". Not comparable with the published numbers: {r.get('note', '')}.")
        if r.get("failures"):
            text += f" {r['failures']} runs failed (listed in the tables)."
        out.append(text)
    missing = m.get("suites_missing", [])
    if missing:
        out.append(f"No data for {', '.join(missing)}: the table 'missing_data' says how to get "
                   "them.")
    return out


def map_caption(sig: Mapping[str, Any], unit: str = "trials") -> str:
    """A title line for a class-difference map from
    :func:`workbench.analysis.spectra.class_difference_significance`: whether the map is above
    chance, its p-value and how many channels are (marked as dots on the map)."""
    p, n = sig["p_value"], len(sig["significant"])
    verdict = "above chance" if p <= 0.05 else "NOT above chance"
    return (f"{verdict}: {_p(p)} (max over channels, {unit} permuted); "
            f"{sig['n_significant']}/{n} channels (dots)")


# ----------------------------------------------------------------------------- runs
class RunWatch:
    """Which runs a notebook found and which it trained.

    Made before the drivers are called, it remembers the finished runs under ``layout`` (their
    ``done.json``); :meth:`note` then says whether a run folder was among them (found, used as
    it is) or was trained now, and which notebook or command makes it.
    """

    def __init__(self, layout: RunLayout, profile: str = "smoke") -> None:
        self.root, self.profile = layout.root, profile
        self.before = self._finished()

    def _finished(self) -> dict[Path, int]:
        return {p.parent.resolve(): p.stat().st_mtime_ns
                for p in self.root.glob(f"*/*/*/{RunFolder.MARKER}")}

    def _where(self, path: Path) -> str:
        try:
            return os.path.relpath(path, project_root())
        except ValueError:  # another drive
            return str(path)

    def note(self, out_dir: str | os.PathLike, what: str, made_by: str) -> str:
        """One line: ``what`` (e.g. "pre-training") was found in ``out_dir`` or trained now.

        ``made_by`` names the notebook that makes the run (e.g. ``03_pretrain``).
        """
        path = Path(out_dir).resolve()
        if path in self.before and self._finished().get(path) == self.before[path]:
            return (f"Found the finished {what} in {self._where(path)} (made by {made_by} or "
                    f"`workbench reproduce --profile {self.profile}`): used as it is, not "
                    "retrained.")
        return (f"No finished {what} with these settings was under {self._where(self.root)}: "
                f"trained it now in {self._where(path)}, resuming whatever had finished there "
                f"before ({made_by} makes it, `workbench reproduce --profile {self.profile}` "
                "makes every run).")

    def report(self, made_by: str) -> str:
        """One line on every run of the notebook: all found, or which were trained now."""
        before, after = self.before, self._finished()
        trained = sorted(p for p, t in after.items() if before.get(p) != t)
        if not trained:
            return (f"Every run this notebook needed was already finished under "
                    f"{self._where(self.root)} (found by its settings): nothing was trained here.")
        return (f"No finished run with these settings was under {self._where(self.root)} for "
                f"{len(trained)} of them; trained now: "
                + ", ".join(os.path.relpath(p, self.root) for p in trained)
                + f" ({made_by} or `workbench reproduce --profile {self.profile}` make them).")
