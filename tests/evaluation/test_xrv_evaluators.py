"""torchxrayvision evaluators, loaded through the real torchxrayvision loaders from fake weights.

No weights can be downloaded here, so the module fixture writes randomly initialised networks of the
real architectures into a fake $HOME, under ``.torchxrayvision/models_data/`` with the release file
names, in the formats torchxrayvision 1.5.7's loaders read:

- DenseNet (models.DenseNet.__init__): ``torch.load(..., weights_only=False)`` of a whole pickled
  model, then ``savedmodel.state_dict()`` -> we pickle a whole ``xrv.models.DenseNet`` (18 classes).
- Race (emory_hiti.RaceModel): ``torch.load(..., weights_only=True)`` loaded into
  ``nn.DataParallel(resnet34)`` -> a plain state dict with ``module.`` prefixes, fc = Linear + LogSoftmax.
- Sex (mira.SexModel): ``torch.load(..., weights_only=False)``; a ``state_dict`` entry whose keys carry
  the ``model.`` prefix (a PyTorch Lightning checkpoint) -> we write such a checkpoint dict.
- Age (riken.AgeModel): ``torch.jit.load``. The real file is a TorchScript SENet-154 (~460 MB, and
  building it needs extra packages), so a small TorchScript module with the same contract
  ((B, 3, 320, 320) ImageNet-normalised -> (B, 1) years) stands in; the loading path is the real one.
"""

from __future__ import annotations

import hashlib
import io
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from cfbench.evaluation import weights
from cfbench.evaluation.xrv import (
    PREPROCESSING_VERSION,
    XRVAgeEvaluator,
    XRVEvaluatorSuite,
    XRVPathologyEvaluator,
    XRVRaceEvaluator,
    XRVSexEvaluator,
    _import_xrv,
    suite_members,
    to_xrv_range,
)
from tests.helpers.datasets import REAL_CXR_DIR

xrv = _import_xrv()

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small CPU forwards: 3-4x slower with 2 threads
REAL_CXR = REAL_CXR_DIR / "00000001_000.png"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------ fake weights

def _calibrate(model: nn.Module, example: torch.Tensor) -> None:
    """Set BatchNorm running statistics from one batch, so random networks give unsaturated outputs."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(example)
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1


def _example(size: int, channels: int = 1, scale=(-1024.0, 1024.0)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(size)
    low, high = scale
    return torch.rand(2, channels, size, size, generator=generator) * (high - low) + low


class _TinyAge(nn.Module):
    """Stand-in for the TorchScript SENet-154: (B, 3, H, W) ImageNet-normalised -> (B, 1) years."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return 50.0 + 10.0 * self.head(features)


def write_fake_xrv_weights(home: Path) -> dict[str, Path]:
    folder = home / ".torchxrayvision" / "models_data"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {}

    densenet = xrv.models.DenseNet(num_classes=18)
    _calibrate(densenet, _example(96))
    with torch.no_grad():  # keep the logits moderate, so the probabilities are not saturated at 0 or 1
        densenet.classifier.weight.mul_(0.1)
        nn.init.normal_(densenet.classifier.bias, std=1.0)
    paths["xrv-densenet121-all"] = folder / weights.get("xrv-densenet121-all").filename
    torch.save(densenet, paths["xrv-densenet121-all"])  # a whole pickled model, as the release file

    race = torchvision.models.resnet34(weights=None)
    race.fc = nn.Sequential(nn.Linear(512, 3), nn.LogSoftmax(dim=1))
    _calibrate(race, (_example(96, 3, (0.0, 1.0)) - IMAGENET_MEAN) / IMAGENET_STD)
    paths["xrv-race"] = folder / weights.get("xrv-race").filename
    torch.save(nn.DataParallel(race).state_dict(), paths["xrv-race"])  # "module." keys

    sex = torchvision.models.resnet34(weights=None)
    sex.fc = nn.Linear(512, 2)
    _calibrate(sex, _example(96, 3, (0.0, 255.0)))
    paths["xrv-sex"] = folder / weights.get("xrv-sex").filename
    checkpoint = {"epoch": 13, "global_step": 7125, "pytorch-lightning_version": "1.9.0",
                  "state_dict": {f"model.{key}": value for key, value in sex.state_dict().items()}}
    torch.save(checkpoint, paths["xrv-sex"])

    paths["xrv-age"] = folder / weights.get("xrv-age").filename
    torch.jit.script(_TinyAge().eval()).save(str(paths["xrv-age"]))
    return paths


@pytest.fixture(scope="module")
def fake_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("fake-home")
    write_fake_xrv_weights(home)
    return home


@pytest.fixture
def xrv_home(fake_home, monkeypatch) -> Path:
    """$HOME points at the fake home; any download attempt fails the test."""
    monkeypatch.setenv("HOME", str(fake_home))
    assert os.path.expanduser("~") == str(fake_home)

    def no_download(url, filename):
        pytest.fail(f"torchxrayvision tried to download {url} to {filename}")

    monkeypatch.setattr(xrv.utils, "download", no_download)
    return fake_home


@pytest.fixture(scope="module")
def loaded(fake_home) -> dict:
    """The four evaluators, built once from the fake home through the real loaders (they keep no
    reference to $HOME after loading)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(fake_home))
        patch.setattr(xrv.utils, "download", lambda url, filename: pytest.fail(f"download of {url}"))
        return {"pathology": XRVPathologyEvaluator(), "race": XRVRaceEvaluator(), "age": XRVAgeEvaluator(),
                "sex": XRVSexEvaluator()}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(1)
    batch = rng.random((2, 256, 256), dtype=np.float32)
    batch[0] = np.linspace(0, 1, 256, dtype=np.float32)[None, :]  # a smooth ramp spanning [0, 1]
    return batch


def _hand_input(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images)[:, None] * 2048.0 - 1024.0
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


# ------------------------------------------------------------------------------------ preprocessing

def test_to_xrv_range_maps_the_ends_exactly():
    images = np.array([[[0.0, 1.0], [0.5, 0.25]]], dtype=np.float32)
    x = to_xrv_range(images, 2)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert x[0, 0, 0, 0].item() == -1024.0 and x[0, 0, 0, 1].item() == 1024.0
    assert x[0, 0, 1, 0].item() == 0.0 and x[0, 0, 1, 1].item() == -512.0


@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (0.0, 255.0)])
def test_to_xrv_range_rejects_wrongly_scaled_input(low, high):
    images = np.linspace(low, high, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_xrv_range(images, 16, who="xrv-densenet")


def test_to_xrv_range_resizes_like_antialiased_interpolate():
    images = np.random.default_rng(2).random((2, 512, 512), dtype=np.float32)
    x = to_xrv_range(images, 224)
    expected = F.interpolate(torch.from_numpy(images)[:, None] * 2048.0 - 1024.0, size=(224, 224),
                             mode="bilinear", antialias=True)
    assert x.shape == (2, 1, 224, 224)
    assert torch.equal(x, expected)
    # torchxrayvision's own resize (fix_resolution) gives the same tensor, so it never needs to run
    with redirect_stdout(io.StringIO()):
        assert torch.equal(xrv.utils.fix_resolution(torch.from_numpy(images)[:, None] * 2048.0 - 1024.0, 224,
                                                    object()), x)


# ------------------------------------------------------------------------------------ the networks

def test_pathology_is_raw_sigmoid_of_classifier_on_features2(xrv_home, loaded, images):
    evaluator = loaded["pathology"]
    assert evaluator.model.op_threshs is None
    out = evaluator.predict(images)
    assert set(out) == {"pathology", "features"}
    assert out["pathology"].shape == (2, 5) and out["pathology"].dtype == np.float32
    assert out["features"].shape == (2, 1024) and out["features"].dtype == np.float32
    assert ((out["pathology"] >= 0) & (out["pathology"] <= 1)).all()
    assert (out["features"] >= 0).all()

    # by hand from the pickled model itself: sigmoid(classifier(features2)), xrv columns by name
    model = torch.load(weights.path_for("xrv-densenet121-all"), map_location="cpu", weights_only=False).eval()
    labels = xrv.models.model_urls["densenet121-res224-all"]["labels"]
    columns = [labels.index(name) for name in ("Atelectasis", "Cardiomegaly", "Edema", "Effusion", "Pneumothorax")]
    with torch.no_grad():
        features = model.features2(_hand_input(images, 224))
        expected = torch.sigmoid(model.classifier(features))[:, columns]
    np.testing.assert_allclose(out["features"], features.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["pathology"], expected.numpy(), rtol=1e-4, atol=1e-6)

    identity = evaluator.identity()
    assert identity["op_norm"] is False
    assert identity["preprocessing_version"] == PREPROCESSING_VERSION
    assert identity["torchxrayvision_version"] == xrv.__version__ == "1.5.7"
    assert identity["weights_sha256"] == hashlib.sha256(weights.path_for("xrv-densenet121-all").read_bytes()).hexdigest()
    assert identity["xrv_targets"] == ["Atelectasis", "Cardiomegaly", "Edema", "Effusion", "Pneumothorax"]


def test_densenet_honours_cache_dir(xrv_home, tmp_path, images):
    cache = tmp_path / "xrv-cache"
    cache.mkdir()
    source = weights.path_for("xrv-densenet121-all")
    (cache / source.name).write_bytes(source.read_bytes())
    evaluator = XRVPathologyEvaluator(cache_dir=cache)
    assert evaluator.weights_path == cache / source.name
    assert Path(evaluator.model.weights_filename_local) == cache / source.name


def test_race_sex_age_match_hand_computation(xrv_home, loaded, images):
    race, sex, age = loaded["race"], loaded["sex"], loaded["age"]
    race_out, sex_out, age_out = race.predict(images), sex.predict(images), age.predict(images)

    assert race.race_classes == ("Asian", "Black", "White")
    assert race_out["race"].shape == (2, 3) and race_out["race"].dtype == np.float32
    np.testing.assert_allclose(race_out["race"].sum(axis=1), 1.0, atol=1e-5)
    assert ((race_out["race"] >= 0) & (race_out["race"] <= 1)).all()
    assert sex_out["sex"].shape == (2,) and ((sex_out["sex"] >= 0) & (sex_out["sex"] <= 1)).all()
    assert age_out["age"].shape == (2,) and np.isfinite(age_out["age"]).all()

    # independent re-implementation of what each network should be fed
    net = torchvision.models.resnet34(weights=None)
    net.fc = nn.Sequential(nn.Linear(512, 3), nn.LogSoftmax(dim=1))
    state = torch.load(weights.path_for("xrv-race"), weights_only=True)
    net.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    x320 = ((_hand_input(images, 320) + 1024) / 2048).repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected_race = torch.exp(net.eval()((x320 - IMAGENET_MEAN) / IMAGENET_STD))
    np.testing.assert_allclose(race_out["race"], expected_race.numpy(), rtol=1e-4, atol=1e-5)

    net = torchvision.models.resnet34(weights=None)
    net.fc = nn.Linear(512, 2)
    state = torch.load(weights.path_for("xrv-sex"), weights_only=False)["state_dict"]
    net.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    x224 = ((_hand_input(images, 224) + 1024) / 2048 * 255).repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected_sex = torch.softmax(net.eval()(x224), dim=1)[:, 0]  # targets ["Male", "Female"]
    np.testing.assert_allclose(sex_out["sex"], expected_sex.numpy(), rtol=1e-4, atol=1e-5)

    scripted = torch.jit.load(str(weights.path_for("xrv-age")))
    with torch.no_grad():
        expected_age = scripted((x320 - IMAGENET_MEAN) / IMAGENET_STD)[:, 0]
    np.testing.assert_allclose(age_out["age"], expected_age.numpy(), rtol=1e-4, atol=1e-3)


def test_suite_builds_the_default_members(xrv_home):
    suite = XRVEvaluatorSuite()
    assert [member.name for member in suite.members] == ["xrv-densenet", "xrv-race", "xrv-age"]
    assert suite.outputs == ("pathology", "features", "race", "age")
    assert suite.race_classes == ("Asian", "Black", "White")
    nih = XRVEvaluatorSuite.for_dataset(has_race=False, batch_size=4)
    assert nih.outputs == ("pathology", "features", "age", "sex") and nih.race_classes == ()
    assert nih.members[0].batch_size == 4
    assert suite_members(has_race=True) == ("pathology", "race", "age")
    assert suite_members(has_race=True, include_sex=True) == ("pathology", "race", "age", "sex")
    assert suite_members(has_race=False, include_sex=False) == ("pathology", "age")
    with pytest.raises(ValueError, match="unknown"):
        XRVEvaluatorSuite(members=("pathology", "height"))


def test_suite_merges_outputs_batches_and_identity(xrv_home, loaded, images, capsys):
    # 2 images: one batch together, then one by one
    suite = XRVEvaluatorSuite(evaluators=[loaded["pathology"], loaded["race"], loaded["age"]], batch_size=2)
    assert suite.outputs == ("pathology", "features", "race", "age")
    assert suite.race_classes == ("Asian", "Black", "White")
    capsys.readouterr()
    together = suite.predict(images)
    printed = capsys.readouterr().out
    assert "Warning" not in printed and "Downloading" not in printed  # xrv's resize/range warnings never ran
    assert set(together) == {"pathology", "features", "race", "age"}
    assert all(value.dtype == np.float32 and value.shape[0] == 2 for value in together.values())

    one_by_one = [suite.predict(images[index:index + 1]) for index in range(2)]
    for key, value in together.items():
        np.testing.assert_allclose(value, np.concatenate([out[key] for out in one_by_one]), rtol=1e-4, atol=1e-4)

    identity = suite.identity()
    assert set(identity["members"]) == {"xrv-densenet", "xrv-race", "xrv-age"}
    for key in ("xrv-densenet121-all", "xrv-race", "xrv-age"):
        path = weights.path_for(key)
        assert identity["weights_sha256"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert identity["preprocessing_version"] == PREPROCESSING_VERSION
    assert identity == suite.identity()  # stable
    import json
    json.dumps(identity)  # serialisable: the output cache keys on it

    with_sex = XRVEvaluatorSuite(evaluators=[loaded["pathology"], loaded["sex"]])
    assert with_sex.outputs == ("pathology", "features", "sex") and with_sex.race_classes == ()
    assert set(with_sex.predict(images[:1])) == {"pathology", "features", "sex"}


def test_suite_rejects_wrongly_scaled_images(loaded):
    suite = XRVEvaluatorSuite(evaluators=[loaded["race"]])
    with pytest.raises(ValueError, match="xrv-suite"):
        suite.predict(np.full((1, 32, 32), -0.5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        suite.predict(np.full((1, 32, 32), 200.0, dtype=np.float32))


# ------------------------------------------------------------------------------------ missing weights

@pytest.mark.parametrize("cls, key", [(XRVPathologyEvaluator, "xrv-densenet121-all"), (XRVRaceEvaluator, "xrv-race"),
                                      (XRVAgeEvaluator, "xrv-age"), (XRVSexEvaluator, "xrv-sex")])
def test_missing_weights_raise_a_clear_error_without_downloading(cls, key, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        pytest.fail("a download was attempted")

    monkeypatch.setattr(xrv.utils, "download", no_download)
    monkeypatch.setattr("requests.get", no_download)
    with pytest.raises(weights.WeightsNotFoundError) as caught:
        cls()
    expected_path = tmp_path / ".torchxrayvision" / "models_data" / weights.get(key).filename
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(expected_path) in message
    assert weights.get(key).url in message
    assert f"cfbench weights fetch {key}" in message
    assert not expected_path.exists() and not expected_path.parent.exists()


def test_suite_lists_every_missing_file(xrv_home, tmp_path, monkeypatch):
    empty = tmp_path / "empty-home"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(empty))
    with pytest.raises(weights.WeightsNotFoundError) as caught:
        XRVEvaluatorSuite()
    message = str(caught.value)
    for key in ("xrv-densenet121-all", "xrv-race", "xrv-age"):
        assert weights.get(key).url in message
    assert "cfbench weights fetch xrv-densenet121-all xrv-race xrv-age" in message


# ------------------------------------------------------------------------------------ a real image

def test_real_image_smoke(loaded, capsys):
    from cfbench.core.images import load_image

    image = load_image(REAL_CXR, resolution=512)
    suite = XRVEvaluatorSuite(evaluators=[loaded[name] for name in ("pathology", "race", "age", "sex")])
    out = suite.predict(image[None])
    assert out["pathology"].shape == (1, 5) and out["features"].shape == (1, 1024)
    assert out["race"].shape == (1, 3) and out["age"].shape == (1,) and out["sex"].shape == (1,)
    assert all(np.isfinite(value).all() for value in out.values())
    assert "Warning" not in capsys.readouterr().out
