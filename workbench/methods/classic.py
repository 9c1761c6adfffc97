"""EEGNet and ShallowConvNet as downstream methods: the classic supervised baselines.

Each is a :class:`~workbench.methods.base.Method` with one variant, ``scratch`` (trained from
random initialisation on the fold's training windows), so the generic driver
:func:`workbench.experiments.finetune` trains it on the very folds, with the same Trainer,
checkpoint selection and top-k ensembling as the foundation models::

    from workbench.experiments import finetune
    from workbench.methods.classic import get_classic

    res = finetune(get_classic("eegnet"), store, protocol="loso", run_dir="runs")

They are **not** registered (:func:`~workbench.methods.list_methods` lists the foundation
methods only): braindecode is an optional extra (``pip install -e '.[bench]'``), imported when
a classifier is built. They have no pre-training and no frozen-encoder modes (``full`` only).

Schedules (**our defaults** where the papers differ from a fine-tune): AdamW without weight
decay, cosine decay, learning rate 1e-3 for EEGNet (Keras' Adam default, which Lawhern et al.
used) and 6.25e-4 for ShallowConvNet (braindecode's example for it). A from-scratch network
needs more epochs than a fine-tune: at least :attr:`ClassicMethod.min_epochs` (30). On the smoke
profile (20 steps of 16 windows per epoch, within-subject, 2 subjects) EEGNet's mean test
balanced accuracy rose from 0.58 (6 epochs) to 0.79 (30) and 0.86 (60) on ``syn_dreamer`` and
from 0.45 (15) to 0.64 (30) on ``syn_seed``; 30 epochs keep a smoke fold near a minute on one
CPU core for the 62-channel ``syn_seed``.

References
----------
.. [1] Lawhern, V. J. et al. (2018). EEGNet: a compact convolutional neural network for
       EEG-based brain-computer interfaces. Journal of Neural Engineering, 15(5), 056013.
.. [2] Schirrmeister, R. T. et al. (2017). Deep learning with convolutional neural networks for
       EEG decoding and visualization. Human Brain Mapping, 38(11), 5391-5420.
"""

from __future__ import annotations

from torch import nn

from ..channels import ChannelVocabulary
from ..config import Profile, TrainConfig
from ..data.store import WindowStore
from ..utils import check_option
from .base import Method, Variant, variant_table

__all__ = ["CLASSIC_BASELINES", "ClassicMethod", "get_classic"]


class ClassicMethod(Method):
    """A classic CNN trained from scratch (see module docstring).

    Parameters
    ----------
    arch : {"eegnet", "shallow_convnet"}
        The :class:`~workbench.models.classic.ClassicNet` architecture; also the method's name.
    description : str
    lr : float
        AdamW learning rate.
    min_epochs : int
        Fewest training epochs, whatever the profile's ``finetune_epochs``.
    """

    variants = variant_table(
        Variant("scratch", "random initialisation, trained on the fold's training windows",
                pretrained=False))
    default_variant = "scratch"
    default_mode = "full"
    any_montage = False  # one fixed montage: the spatial filters are per channel
    paper_results = ()

    def __init__(self, arch: str, description: str, lr: float, min_epochs: int = 30):
        from ..models.classic import ARCHS

        check_option("arch", arch, ARCHS)
        self.name = arch
        self.description = description
        self.lr = lr
        self.min_epochs = min_epochs

    def build_classifier(self, variant: str, preset: str, store: WindowStore,
                         vocab: ChannelVocabulary, n_classes: int, pretrained_state,
                         head: str = "default") -> tuple[nn.Module, dict]:
        """A :class:`~workbench.models.classic.ClassicNet` for ``store``'s windows (its
        channels, window length and rate); ``preset`` is recorded, the architecture is the
        paper's whatever it is."""
        from ..models.classic import ClassicNet

        self.variant(variant)
        check_option("head", head, ("default",))
        if pretrained_state is not None:
            raise ValueError(f"{self.name} is trained from scratch: 'pretrained_state' must be "
                             "None.")
        kw = {"arch": self.name, "n_chans": len(store.ch_names), "n_times": store.n_times,
              "n_classes": int(n_classes), "sfreq": float(store.sfreq)}
        return ClassicNet(**kw), {"name": self.name, "preset": preset, "overrides": kw}

    def encoder_parameter_names(self, model: nn.Module) -> list[str]:
        return []  # nothing comes from pre-training

    def finetune_config(self, profile: Profile, store: WindowStore | None,
                        mode: str = "full") -> TrainConfig:
        check_option("mode", mode, ("full",))
        return TrainConfig(epochs=max(profile.finetune_epochs, self.min_epochs),
                           batch_size=profile.finetune_batch_size, lr=self.lr, weight_decay=0.0,
                           schedule="cosine", grad_clip=None,
                           max_steps_per_epoch=profile.max_steps_per_epoch, keep_top_k=3,
                           num_workers=profile.num_workers)

    def selection_metric(self, n_classes: int) -> str:
        return "balanced_accuracy"


#: The classic baselines by name (not registered: see the module docstring).
CLASSIC_BASELINES: dict[str, ClassicMethod] = {
    "eegnet": ClassicMethod(
        "eegnet", "EEGNet-8,2 (Lawhern et al. 2018, J. Neural Eng.): compact depthwise-separable "
                  "CNN, from scratch (braindecode EEGNetv4)", lr=1e-3),
    "shallow_convnet": ClassicMethod(
        "shallow_convnet", "ShallowConvNet (Schirrmeister et al. 2017, Hum. Brain Mapp.): "
                           "temporal + spatial convolution, square, mean pool, log; from scratch "
                           "(braindecode ShallowFBCSPNet)", lr=6.25e-4),
}


def get_classic(name: str) -> ClassicMethod:
    """The classic baseline ``name``; ``ValueError`` listing the names otherwise."""
    check_option("name", name, sorted(CLASSIC_BASELINES))
    return CLASSIC_BASELINES[name]
