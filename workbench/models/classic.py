"""EEGNet and ShallowConvNet: the classic supervised baselines, from braindecode.

:class:`ClassicNet` wraps braindecode's ``EEGNetv4`` (EEGNet-8,2, Lawhern et al. 2018) and
``ShallowFBCSPNet`` (ShallowConvNet, Schirrmeister et al. 2017) behind the workbench's model
contract: ``model(x, ch_ids=None, rate_id=None, ch_mask=None) -> {"logits", "embedding"}``.

* **Rates.** The papers give their kernel and pooling lengths in samples at one rate (EEGNet at
  128 Hz, ShallowConvNet at 250 Hz). They are constructor keywords in *seconds* here and are
  converted to samples at the store's rate, so 100 Hz and 200 Hz data get the same time spans.
  braindecode 0.8.1 fixes EEGNet's separable-convolution kernel (16 samples) and its pools (4
  and 8 samples) in samples; only the temporal kernel follows the rate.
* **Short windows.** Lengths that do not fit the window are clipped (a log line says so), and
  the classification layer covers whatever is left (braindecode's ``final_conv_length="auto"``).
* **Raw logits.** braindecode 0.8.1 ends ``ShallowFBCSPNet`` with a ``LogSoftmax`` by default;
  it is switched off (and any ``LogSoftmax`` left in the final layer is removed), because the
  workbench's objective and predictions apply the softmax themselves.
* **Scale.** Inputs are microvolts (the stores' scale, and the scale braindecode's examples
  feed these networks).

The models are not registered in :mod:`workbench.models.registry`: braindecode is an optional
extra (``pip install -e '.[bench]'``), imported only when a :class:`ClassicNet` is built.

References
----------
.. [1] Lawhern, V. J., Solon, A. J., Waytowich, N. R., Gordon, S. M., Hung, C. P., & Lance,
       B. J. (2018). EEGNet: a compact convolutional neural network for EEG-based
       brain-computer interfaces. Journal of Neural Engineering, 15(5), 056013.
.. [2] Schirrmeister, R. T., Springenberg, J. T., Fiederer, L. D. J., Glasstetter, M.,
       Eggensperger, K., Tangermann, M., Hutter, F., Burgard, W., & Ball, T. (2017). Deep
       learning with convolutional neural networks for EEG decoding and visualization. Human
       Brain Mapping, 38(11), 5391-5420.
.. [3] Gramfort, A. et al. braindecode 0.8.1, https://braindecode.org (``EEGNetv4``,
       ``ShallowFBCSPNet``).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..utils import check_option, get_logger

__all__ = ["ARCHS", "ClassicNet", "seconds_to_samples"]

log = get_logger("models")

#: The architectures :class:`ClassicNet` builds.
ARCHS = ("eegnet", "shallow_convnet")

#: Dropout of each paper (EEGNet: 0.25 for cross-subject, ShallowConvNet: 0.5).
_DEFAULT_DROPOUT = {"eegnet": 0.25, "shallow_convnet": 0.5}

#: braindecode 0.8.1's EEGNetv4 pools by 4 then 8 samples: windows shorter than this are refused.
_EEGNET_MIN_TIMES = 32

_MISSING = "EEGNet and ShallowConvNet come from braindecode: pip install -e '.[bench]'"


def seconds_to_samples(seconds: float, sfreq: float) -> int:
    """``round(seconds * sfreq)``, at least 1: a kernel or pool length at the store's rate."""
    return max(1, int(round(seconds * sfreq)))


class ClassicNet(nn.Module):
    """EEGNet-8,2 or ShallowConvNet (braindecode 0.8.1) under the workbench's model contract.

    Parameters
    ----------
    arch : {"eegnet", "shallow_convnet"}
    n_chans, n_times : int
        Channels and samples of the windows (fixed: the classification layer spans the window).
    n_classes : int
        Number of logits.
    sfreq : float
        Sampling rate (Hz) of the windows; converts the lengths in seconds to samples.
    F1, D, F2 : int
        EEGNet: temporal filters, depth multiplier (spatial filters per temporal filter) and
        pointwise filters (EEGNet-8,2: 8, 2, 16 [1]_).
    kernel_s : float
        EEGNet: temporal kernel length (s); the paper's 64 samples at 128 Hz = 0.5 s [1]_.
    n_filters_time, n_filters_spat : int
        ShallowConvNet: temporal and spatial filters (40 and 40 [2]_).
    filter_time_s : float
        ShallowConvNet: temporal kernel length (s); 25 samples at 250 Hz = 0.1 s [2]_.
    pool_time_s, pool_stride_s : float
        ShallowConvNet: mean-pooling length and stride (s); 75 and 15 samples at 250 Hz =
        0.3 s and 0.06 s [2]_.
    drop_prob : float, optional
        Dropout before the classification layer; None takes the paper's (EEGNet 0.25 [1]_,
        ShallowConvNet 0.5 [2]_).

    Outputs
    -------
    ``logits`` (B, n_classes), raw (no log-softmax); ``embedding`` (B, F), the flattened
    features that enter the classification layer (EEGNet: F2 x remaining time steps,
    ShallowConvNet: n_filters_spat x pooled time steps).

    References
    ----------
    .. [1] Lawhern et al. (2018). EEGNet. J. Neural Eng. 15(5), 056013.
    .. [2] Schirrmeister et al. (2017). Deep learning with convolutional neural networks for
           EEG decoding and visualization. Hum. Brain Mapp. 38(11), 5391-5420.
    """

    def __init__(self, arch: str = "eegnet", n_chans: int = 22, n_times: int = 256,
                 n_classes: int = 2, sfreq: float = 128.0, *,
                 F1: int = 8, D: int = 2, F2: int = 16, kernel_s: float = 0.5,
                 n_filters_time: int = 40, n_filters_spat: int = 40, filter_time_s: float = 0.1,
                 pool_time_s: float = 0.3, pool_stride_s: float = 0.06,
                 drop_prob: float | None = None):
        super().__init__()
        check_option("arch", arch, ARCHS)
        for name, value in (("n_chans", n_chans), ("n_times", n_times),
                            ("n_classes", n_classes)):
            if int(value) < 1:
                raise ValueError(f"Invalid value for the {name!r} parameter: expected a "
                                 f"positive integer, got {value!r}.")
        if sfreq <= 0:
            raise ValueError(f"Invalid value for the 'sfreq' parameter: expected a positive "
                             f"rate (Hz), got {sfreq!r}.")
        try:
            from braindecode.models import EEGNetv4, ShallowFBCSPNet
        except ImportError as e:
            raise ImportError(_MISSING) from e
        self.arch, self.n_chans, self.n_times = arch, int(n_chans), int(n_times)
        self.n_classes, self.sfreq = int(n_classes), float(sfreq)
        drop = _DEFAULT_DROPOUT[arch] if drop_prob is None else float(drop_prob)
        common = {"n_chans": self.n_chans, "n_outputs": self.n_classes,
                  "n_times": self.n_times, "final_conv_length": "auto", "drop_prob": drop}
        if arch == "eegnet":
            if self.n_times < _EEGNET_MIN_TIMES:
                raise ValueError(f"Invalid value for the 'n_times' parameter: EEGNet (braindecode "
                                 f"0.8.1) pools by 4 and 8 samples and needs at least "
                                 f"{_EEGNET_MIN_TIMES} samples, got {self.n_times}.")
            k = self._clip("kernel_s", seconds_to_samples(kernel_s, sfreq), self.n_times)
            self.lengths = {"kernel_length": k}
            cls, kw = EEGNetv4, {"F1": F1, "D": D, "F2": F2, "kernel_length": k}
        else:
            f = self._clip("filter_time_s", seconds_to_samples(filter_time_s, sfreq),
                           self.n_times)
            pool = self._clip("pool_time_s", seconds_to_samples(pool_time_s, sfreq),
                              self.n_times - f + 1)  # what the valid temporal conv leaves
            stride = self._clip("pool_stride_s", seconds_to_samples(pool_stride_s, sfreq), pool)
            self.lengths = {"filter_time_length": f, "pool_time_length": pool,
                            "pool_time_stride": stride}
            cls, kw = ShallowFBCSPNet, {"n_filters_time": n_filters_time,
                                        "n_filters_spat": n_filters_spat, **self.lengths}
        if "add_log_softmax" in inspect.signature(cls.__init__).parameters:
            kw["add_log_softmax"] = False  # raw logits (ShallowFBCSPNet's default is True)
        self.net = cls(**common, **kw)
        # Whatever the version's default, no LogSoftmax may remain in the final layer.
        final = self.net.final_layer
        for name, mod in list(final.named_children()):
            if isinstance(mod, nn.LogSoftmax):
                delattr(final, name)
        self.train()  # ShallowFBCSPNet leaves itself in eval mode after construction

    def _clip(self, name: str, samples: int, limit: int) -> int:
        if samples <= limit:
            return samples
        log.info("%s: %s is %d samples at %g Hz, clipped to %d for windows of %d samples",
                 self.arch, name, samples, self.sfreq, limit, self.n_times)
        return max(1, limit)

    @property
    def classifier(self) -> nn.Conv2d:
        """The classification layer (a convolution spanning the whole feature map, i.e. a
        linear layer on the flattened ``embedding``)."""
        return self.net.final_layer.conv_classifier

    def forward(self, x: torch.Tensor, ch_ids: torch.Tensor | None = None,
                rate_id: torch.Tensor | None = None, ch_mask: torch.Tensor | None = None,
                **kw) -> dict[str, torch.Tensor]:
        """``x`` (B, C, T) microvolts -> ``{"logits": (B, K), "embedding": (B, F)}``.

        One fixed montage: ``ch_ids``, ``rate_id`` and ``ch_mask`` are accepted for the
        contract and ignored.
        """
        if x.ndim != 3 or x.shape[1] != self.n_chans or x.shape[2] != self.n_times:
            raise ValueError(f"Invalid shape of 'x' for {self.arch}: expected (B, "
                             f"{self.n_chans}, {self.n_times}), got {tuple(x.shape)}.")
        h = x
        for name, mod in self.net.named_children():
            if name == "final_layer":
                break
            h = mod(h)  # EEGNet (B, F2, 1, T'); ShallowConvNet (B, n_filters_spat, T', 1)
        logits = self.net.final_layer(h)  # (B, K)
        return {"logits": logits.reshape(x.shape[0], self.n_classes),
                "embedding": h.flatten(1)}  # (B, F)
