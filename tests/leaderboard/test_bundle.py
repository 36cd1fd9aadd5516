"""Results bundles (`cfbench export`): small, free of patient data and images, and read by the leaderboard
like the run folder they came from."""

from __future__ import annotations

import csv
import io
import tarfile

import pytest

from cfbench.cli import main
from cfbench.leaderboard.bundle import BundleError, open_bundle
from tests.helpers.runs import make_evaluated_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_evaluated_runs(tmp_path_factory.mktemp("bundle"), n=12, size=64)


def test_export_leaves_out_images_and_patient_columns(runs, tmp_path, capsys):
    run = runs["tests.helpers.fake_models:NoisyEditModel"]
    out = tmp_path / "noisy.cfbench.tar.gz"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "no images" in capsys.readouterr().out
    with tarfile.open(out) as archive:
        names = sorted(archive.getnames())
        predictions = archive.extractfile("NoisyEditModel/predictions.csv").read().decode()
    assert names == ["NoisyEditModel", "NoisyEditModel/bundle.json", "NoisyEditModel/manifest.json",
                     "NoisyEditModel/metrics.json", "NoisyEditModel/predictions.csv", "NoisyEditModel/results.jsonl"]
    header = next(csv.reader(io.StringIO(predictions)))
    original = next(csv.reader(io.StringIO((run / "predictions.csv").read_text())))
    assert "sample_id" in header and any(name.startswith("generated/") for name in header)
    assert not [name for name in header if name.startswith(("label/", "real/")) or name.endswith("_true")]
    assert {"race_true", "age_true"} <= set(original) - set(header)
    assert predictions.count("\n") == 13  # header + 12 samples
    assert out.stat().st_size < 50_000
    assert main(["export", str(run), "--out", str(tmp_path / "with-images.cfbench.tar.gz"), "--images"]) == 0
    with tarfile.open(tmp_path / "with-images.cfbench.tar.gz") as archive:
        assert sum(name.startswith("NoisyEditModel/images/") for name in archive.getnames()) == 12


def test_leaderboard_reads_a_bundle_like_the_run_folder(runs, tmp_path, capsys):
    folders = [str(runs[model]) for model in ("identity", "ground-truth")]
    bundle = tmp_path / "identity.cfbench.tar.gz"
    assert main(["export", folders[0], "--out", str(bundle)]) == 0
    assert main(["leaderboard", *folders, "--out", str(tmp_path / "from-folders"), "--no-plots", "--no-reported"]) == 0
    assert main(["leaderboard", str(bundle), folders[1], "--out", str(tmp_path / "from-bundle"), "--no-plots",
                 "--no-reported"]) == 0
    error = capsys.readouterr().err
    assert "identity is a results bundle without images" in error
    def without_paths(path):
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert rows and "run_dir" in rows[0]
        return [{k: v for k, v in row.items() if k != "run_dir"} for row in rows]

    for table in ("instructx2x.csv", "locality.csv"):  # the same numbers and run ids; only the folder differs
        assert without_paths(tmp_path / "from-bundle" / table) == without_paths(tmp_path / "from-folders" / table)
    assert (tmp_path / "from-bundle" / "index.html").is_file()


def test_an_archive_that_is_not_a_bundle_is_refused(tmp_path):
    evil = tmp_path / "evil.cfbench.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        data = b"x"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="refusing archive member|one top folder"):
        open_bundle(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()
