"""torchxrayvision evaluators: DenseNet pathology + FID features, race, age and sex models.

One preprocessing path, :func:`to_xrv_range`, feeds every network: cfbench images (float32, [0, 1]) are
range-checked (``check_images`` rejects [-1, 1] and [0, 255] input), mapped to torchxrayvision's
[-1024, 1024] by ``x * 2048 - 1024`` and resized (square) to the network's native resolution with
``F.interpolate(mode="bilinear", antialias=True)``, as torchxrayvision >= 1.3.2 resizes. Because the
input already has the native size and range, torchxrayvision's own resize and its normalisation warning
never run. ``PREPROCESSING_VERSION`` names this path and is part of every ``identity()``.

What each network is fed (read from torchxrayvision 1.5.7's forward methods; they all take
[-1024, 1024] single-channel input and rescale internally):

- ``models.DenseNet`` (224 px): uses [-1024, 1024] directly. We call ``features2`` once (ReLU + global
  average pool, 1024-d, the FID features) and apply ``model.classifier`` to it, then a sigmoid: raw
  probabilities, never op_norm (``op_threshs`` is cleared), so KL and F1 see calibrated-as-trained values.
- ``emory_hiti.RaceModel`` (ResNet-34, 320 px): repeat to 3 channels, ``(x + 1024) / 2048``, ImageNet
  normalisation; returns log-softmax over Asian/Black/White, exponentiated here.
- ``riken.AgeModel`` (TorchScript SENet-154, 320 px): same as the race model; returns years (B, 1).
- ``mira.SexModel`` (ResNet-34, 224 px): repeat to 3 channels, ``(x + 1024) / 2048 * 255``; returns
  logits over Male/Female; we report softmax P(Male).

Weights are never downloaded here: every file is checked at its exact path (:mod:`cfbench.evaluation.weights`)
before the torchxrayvision class is constructed, and a missing file raises ``WeightsNotFoundError``; the file
must be the one this user trusts, and pickles are read without running code (:mod:`cfbench.evaluation.weights_trust`).
"""

from __future__ import annotations

import abc
import contextlib
import warnings
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cfbench.api.evaluator import Evaluator, check_images
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation import weights as weights_manager
from cfbench.evaluation.weights_trust import restricted_unpickling, verify

PREPROCESSING_VERSION = "xrv-pre-1: [0,1] checked; x*2048-1024; square bilinear antialiased resize to native size"

XRV_MIN, XRV_MAX = -1024.0, 1024.0

# torchxrayvision target name -> cfbench (CheXpert) finding name, where they differ.
XRV_TO_CFBENCH: dict[str, str] = {"Effusion": "Pleural Effusion"}

DEFAULT_DENSENET_WEIGHTS = "densenet121-res224-all"


def _import_xrv():
    """torchxrayvision, imported without letting it switch off every Python warning in the process
    (its models module calls ``warnings.filterwarnings("ignore")`` at import)."""
    with warnings.catch_warnings():
        import torchxrayvision

    return torchxrayvision


def xrv_version() -> str:
    return _import_xrv().__version__


def to_xrv_range(images: np.ndarray, size: int, device: str | torch.device = "cpu",
                 who: str = "to_xrv_range") -> torch.Tensor:
    """cfbench images (float32 (B, H, W) in [0, 1], square) -> torch float32 (B, 1, size, size) in [-1024, 1024].

    The one preprocessing path of every torchxrayvision network. Rejects wrongly scaled input.
    """
    images = check_images(images, who)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)[:, None]
    x = x * (XRV_MAX - XRV_MIN) + XRV_MIN
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


@contextlib.contextmanager
def _normalisation_checked() -> Iterator[None]:
    """Tell torchxrayvision its input-range heuristic has run (ours, ``check_images``, ran instead).

    Its ``warn_normalization`` prints a warning for a dark or low-contrast first image even when the
    range is right; the previous state of its log is restored afterwards.
    """
    log = _import_xrv().utils.warning_log
    saved = {key: log[key] for key in ("norm_check", "norm_correct") if key in log}
    log["norm_check"] = True
    log.setdefault("norm_correct", True)
    try:
        yield
    finally:
        for key in ("norm_check", "norm_correct"):
            log.pop(key, None)
        log.update(saved)


class XRVModelEvaluator(Evaluator):
    """One torchxrayvision network behind the Evaluator contract. Subclasses load and run it."""

    weights_key: str = ""
    resolution: int = 0  # native input size

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16,
                 cache_dir: str | Path | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        # Check the file at its exact path BEFORE torchxrayvision sees it (it would download otherwise).
        self.weights_path = weights_manager.require(self.weights_key, cache_dir)
        # ...and that it is the file this user trusts, then unpickle it without letting it run code
        self._sha256: str | None = verify(self.weights_path, self.weights_key,
                                          weights_manager.get(self.weights_key).sha256)
        xrv = _import_xrv()
        with restricted_unpickling():
            model = self._build(xrv)
        loaded_from = getattr(model, "weights_filename_local", None)
        if loaded_from is not None and Path(loaded_from).resolve() != self.weights_path.resolve():
            raise RuntimeError(f"{self.name}: torchxrayvision loaded {loaded_from}, expected {self.weights_path}")
        self.model = model.to(self.device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    # -- subclass hooks
    @abc.abstractmethod
    def _build(self, xrv) -> torch.nn.Module:
        """Construct the torchxrayvision network (its constructor reads ``self.weights_path``)."""

    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 1, resolution, resolution) in [-1024, 1024] on self.device -> outputs as tensors."""

    def _identity_extra(self) -> dict[str, Any]:
        return {}

    # -- Evaluator
    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _predict([self], check_images(images, self.name), self.batch_size, self.name)

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = weights_manager.cached_sha256(self.weights_path)
        return self._sha256

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outputs": list(self.outputs),
            "weights_key": self.weights_key,
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "input_resolution": self.resolution,
            "preprocessing_version": PREPROCESSING_VERSION,
            "torchxrayvision_version": xrv_version(),
            "torch_version": torch.__version__.split("+")[0],
            **self._identity_extra(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.weights_path.name}, device={self.device})"


class XRVPathologyEvaluator(XRVModelEvaluator):
    """torchxrayvision DenseNet-121: raw sigmoid probabilities of the five findings and 1024-d features."""

    name: ClassVar[str] = "xrv-densenet"
    outputs = ("pathology", "features")
    resolution = 224

    def __init__(self, weights: str = DEFAULT_DENSENET_WEIGHTS, device: str | torch.device = "cpu",
                 batch_size: int = 16, cache_dir: str | Path | None = None):
        self.xrv_weights = weights
        self.weights_key = weights_manager.key_for_xrv_weights(weights)
        super().__init__(device=device, batch_size=batch_size, cache_dir=cache_dir)

    def _build(self, xrv) -> torch.nn.Module:
        model = xrv.models.DenseNet(weights=self.xrv_weights, cache_dir=str(self.weights_path.parent))
        model.op_threshs = None  # raw probabilities: no op_norm
        model.apply_sigmoid = False
        self.resolution = int(getattr(model, "input_resolution", self.resolution))
        targets = [XRV_TO_CFBENCH.get(target, target) for target in model.targets]
        missing = [finding for finding in EVALUATED_FINDINGS if finding not in targets]
        if missing:
            raise ValueError(f"torchxrayvision weights {self.xrv_weights!r} do not predict {missing}")
        self.target_index = [targets.index(finding) for finding in EVALUATED_FINDINGS]
        self.xrv_targets = [model.targets[index] for index in self.target_index]
        return model

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model.features2(x)  # the trunk runs once: FID features and the classifier input
        logits = self.model.classifier(features)
        pathology = torch.sigmoid(logits[:, self.target_index])
        return {"pathology": pathology, "features": features}

    def _identity_extra(self) -> dict[str, Any]:
        return {"xrv_weights": self.xrv_weights, "op_norm": False, "findings": list(EVALUATED_FINDINGS),
                "xrv_targets": self.xrv_targets, "features": "features2 (ReLU + global average pool)"}


class XRVRaceEvaluator(XRVModelEvaluator):
    """Emory HITI ResNet-34 race model: softmax probabilities over Asian / Black / White."""

    name: ClassVar[str] = "xrv-race"
    outputs = ("race",)
    weights_key = "xrv-race"
    resolution = 320

    def _build(self, xrv) -> torch.nn.Module:
        model = xrv.baseline_models.emory_hiti.RaceModel()
        self.race_classes = tuple(model.targets)
        return model

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"race": torch.exp(self.model(x))}  # the model returns log-softmax

    def _identity_extra(self) -> dict[str, Any]:
        return {"race_classes": list(self.race_classes), "output": "exp(log_softmax)"}


class XRVAgeEvaluator(XRVModelEvaluator):
    """RIKEN SENet-154 (TorchScript) age model: years."""

    name: ClassVar[str] = "xrv-age"
    outputs = ("age",)
    weights_key = "xrv-age"
    resolution = 320

    def _build(self, xrv) -> torch.nn.Module:
        return xrv.baseline_models.riken.AgeModel()

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"age": self.model(x).reshape(x.shape[0], -1)[:, 0]}

    def _identity_extra(self) -> dict[str, Any]:
        return {"output": "years"}


class XRVSexEvaluator(XRVModelEvaluator):
    """MIRA ResNet-34 sex model: probability that the patient is male."""

    name: ClassVar[str] = "xrv-sex"
    outputs = ("sex",)
    weights_key = "xrv-sex"
    resolution = 224

    def _build(self, xrv) -> torch.nn.Module:
        model = xrv.baseline_models.mira.SexModel()
        self.male_index = list(model.targets).index("Male")
        return model

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sex": torch.softmax(self.model(x), dim=1)[:, self.male_index]}

    def _identity_extra(self) -> dict[str, Any]:
        return {"output": "softmax(logits)[Male]"}


MEMBER_CLASSES: dict[str, type[XRVModelEvaluator]] = {
    "pathology": XRVPathologyEvaluator,
    "race": XRVRaceEvaluator,
    "age": XRVAgeEvaluator,
    "sex": XRVSexEvaluator,
}
DEFAULT_MEMBERS: tuple[str, ...] = ("pathology", "race", "age")
suite_members = weights_manager.suite_members  # light to import, for the preflight: it lives there




def _predict(members: Sequence[XRVModelEvaluator], images: np.ndarray, batch_size: int,
             who: str) -> dict[str, np.ndarray]:
    """Run members over checked images in batches; one preprocessing per (resolution, device) and batch."""
    collected: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), _normalisation_checked():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size]
            prepared: dict[tuple[int, torch.device], torch.Tensor] = {}
            for member in members:
                slot = (member.resolution, member.device)
                if slot not in prepared:
                    prepared[slot] = to_xrv_range(chunk, member.resolution, member.device, who)
                for key, value in member._forward(prepared[slot]).items():
                    collected.setdefault(key, []).append(value.detach().float().cpu().numpy())
    return {key: np.concatenate(parts).astype(np.float32, copy=False) for key, parts in collected.items()}


class XRVEvaluatorSuite(Evaluator):
    """Several torchxrayvision networks answering together as one Evaluator.

    ``members``: names from ``MEMBER_CLASSES`` (default pathology + race + age; add "sex", e.g. for
    NIH-style data without race), or ready evaluator instances via ``evaluators``. Every weights file
    is checked before any network is built; one error lists all that are missing.
    """

    name: ClassVar[str] = "xrv-suite"

    def __init__(self, members: Sequence[str] = DEFAULT_MEMBERS, *, device: str | torch.device = "cpu",
                 batch_size: int = 16, densenet_weights: str = DEFAULT_DENSENET_WEIGHTS,
                 cache_dir: str | Path | None = None,
                 evaluators: Sequence[XRVModelEvaluator] | None = None):
        if evaluators is None:
            unknown = [member for member in members if member not in MEMBER_CLASSES]
            if unknown or not members:
                raise ValueError(f"unknown or no suite members {list(unknown)}; choose from {list(MEMBER_CLASSES)}")
            keys = [weights_manager.key_for_xrv_weights(densenet_weights) if member == "pathology"
                    else MEMBER_CLASSES[member].weights_key for member in members]
            weights_manager.require_all(keys, cache_dir)
            evaluators = []
            for member in dict.fromkeys(members):
                options = {"device": device, "batch_size": batch_size, "cache_dir": cache_dir}
                if member == "pathology":
                    options["weights"] = densenet_weights
                evaluators.append(MEMBER_CLASSES[member](**options))
        self.members: list[XRVModelEvaluator] = list(evaluators)
        outputs: list[str] = []
        for member in self.members:
            clash = set(outputs) & set(member.outputs)
            if clash:
                raise ValueError(f"suite members give the same outputs {sorted(clash)}")
            outputs.extend(member.outputs)
        self.outputs = tuple(outputs)
        self.race_classes = next((m.race_classes for m in self.members if "race" in m.outputs), ())
        self.batch_size = int(batch_size)

    @classmethod
    def for_dataset(cls, has_race: bool, device: str | torch.device = "cpu", include_sex: bool | None = None,
                    **options: Any) -> "XRVEvaluatorSuite":
        """The members a dataset needs: pathology + race + age when it records race (MIMIC-style);
        pathology + age + sex when it does not (NIH-style). ``include_sex`` overrides the sex choice."""
        members = suite_members(has_race, include_sex)
        return cls(members, device=device, **options)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _predict(self.members, check_images(images, self.name), self.batch_size, self.name)

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outputs": list(self.outputs),
            "preprocessing_version": PREPROCESSING_VERSION,
            "torchxrayvision_version": xrv_version(),
            "members": {member.name: member.identity() for member in self.members},
            "weights_sha256": {member.weights_path.name: member.weights_sha256 for member in self.members},
        }

    def __repr__(self) -> str:
        return f"XRVEvaluatorSuite({[member.name for member in self.members]})"
