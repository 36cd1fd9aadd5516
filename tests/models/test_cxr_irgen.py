"""CXR-IRGen on a tiny random release: Lightning checkpoints in the release's layout, converted through
`cfbench convert-ckpt --format cxr-irgen`, loaded through the adapter; compared with diffusers' own
StableDiffusionPipeline called as the release calls it, and the report head with the release's uncached loop."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.core.errors import WeightsNotFoundError
from cfbench.datasets.edit_dataset import DatasetWriter, EditDataset
from cfbench.models.cxr_irgen import label_prompt, release_codes
from tests.helpers.datasets import make_samples
from tests.helpers.tiny_cxr_irgen import SIZE, save_tiny_cxr_irgen_release

STEPS = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")
EFFUSION = {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Pleural Effusion": -1.0, "Pneumothorax": 0.0}
EDEMA = {"Edema": 1.0}
UNMATCHED = {"Pneumonia": 1.0, "Fracture": 0.0}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return save_tiny_cxr_irgen_release(tmp_path_factory.mktemp("cxr-irgen") / "release")


def convert(release, out, *extra) -> int:
    from cfbench.cli import main

    return main(["--quiet", "convert-ckpt", str(release["diffusion_ckpt"]), "--format", "cxr-irgen", "--config",
                 str(release["sd_config"]), "--clip-vision", str(release["clip"]), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def folder(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "cxr-irgen"
    assert convert(release, out, "--report-ckpt", str(release["prior_ckpt"]), "--lm-ckpt", str(release["lm_ckpt"]),
                   "--bart", str(release["bart"])) == 0
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """train: t3 and t1 with EFFUSION labels (t1 is the reference), t2 with EDEMA; test: one of each and one
    whose labels no training sample has; every sample has a reference explanation."""
    root = tmp_path_factory.mktemp("data") / "data"
    rng = np.random.default_rng(0)
    writer = DatasetWriter(root)
    rows = [("t3", "train", EFFUSION), ("t1", "train", EFFUSION), ("t2", "train", EDEMA),
            ("x1", "test", EFFUSION), ("x2", "test", EDEMA), ("x3", "test", UNMATCHED)]
    for index, (sample_id, split, labels) in enumerate(rows):
        sample = make_samples(1, split)[0]
        sample.sample_id, sample.labels = sample_id, labels
        sample.past_dicom_id, sample.current_dicom_id = f"{sample_id}a", f"{sample_id}b"
        sample.reference_explanation = "no pleural effusion . the heart size is normal ."
        writer.add(sample, rng.random((SIZE, SIZE), dtype=np.float32), rng.random((SIZE, SIZE), dtype=np.float32))
    writer.close()
    return root


def load(folder, dataset_root, **options):
    options = {"native_resolution": str(SIZE), "steps": str(STEPS), "report_max_tokens": "10", **options}
    return get_model_class("cxr-irgen").load(LoadContext(model_path=folder, options=options,
                                                         dataset=EditDataset(dataset_root, "test", resolution=SIZE)))


def request(sample_id: str, seed: int = 3) -> EditRequest:
    return EditRequest(sample_id=sample_id, image=np.zeros((SIZE, SIZE), dtype=np.float32), instruction="-", seed=seed)


def test_label_prompt_in_the_release_wording():
    codes = release_codes(EFFUSION)
    assert codes == (1, -1, 0, 0, 0, 0, 0, 0, 0, -2, 0, 0, -1, 0)  # CheXpert order; 0.0 -> -1, -1.0 -> -2, blank -> 0
    assert label_prompt(codes) == ("A chest X ray image with atelectasis, without cardiomegaly and pneumothorax, "
                                   "and with uncertain pleural effusion")
    assert label_prompt(release_codes({})) == "A chest X ray image"
    assert label_prompt(release_codes({"No Finding": 1.0, "Support Devices": 1.0, "Lung Lesion": 0.0})) == \
        "A chest X ray image with no finding and support devices, without lung lesion"
    assert label_prompt(release_codes({"Enlarged Cardiomediastinum": -1.0})) == \
        "A chest X ray image, and with uncertain enlarged cardiomediastinum"


def test_conversion_takes_each_network_from_its_checkpoint(release, folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import BartForConditionalGeneration, ViTModel

    from cfbench.training.cxr_irgen_convert import vit_config_fields

    written = release["_models"]
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    for name, tensor in written["unet"].state_dict().items():
        torch.testing.assert_close(unet.state_dict()[name], tensor, rtol=0, atol=0)
    base = UNet2DConditionModel.from_pretrained(release["sd_config"], subfolder="unet")
    assert not torch.equal(base.conv_in.weight, unet.conv_in.weight)  # the checkpoint's, not the config folder's
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    sd_vae = AutoencoderKL.from_pretrained(release["sd_config"], subfolder="vae")
    attention = vae.decoder.mid_block.attentions[0]  # diffusers 0.14's query/key/value/proj_attn, renamed
    torch.testing.assert_close(attention.to_out[0].weight, sd_vae.decoder.mid_block.attentions[0].to_out[0].weight)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    vit = ViTModel.from_pretrained(folder / "report_encoder")
    torch.testing.assert_close(vit(pixel_values=latents).pooler_output,
                               written["vit"].eval()(pixel_values=latents).pooler_output)
    bart = BartForConditionalGeneration.from_pretrained(folder / "report_decoder")
    torch.testing.assert_close(bart.final_logits_bias, written["bart"].final_logits_bias)
    record = json.loads((folder / "cxr_irgen.json").read_text())
    assert set(record["sources"]) == {"diffusion", "report", "lm"} and record["report_head"]
    # the release's ViTConfig(image_size=32, patch_size=2, num_channels=4) read back from ViT-Base shapes
    shapes = {"embeddings.patch_embeddings.projection.weight": (768, 4, 2, 2),
              "embeddings.position_embeddings": (1, 257, 768),
              **{f"encoder.layer.{i}.intermediate.dense.weight": (3072, 768) for i in range(12)}}
    fields = vit_config_fields({key: torch.empty(shape, device="meta") for key, shape in shapes.items()})
    assert fields == {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "num_channels": 4,
                      "patch_size": 2, "image_size": 32, "num_attention_heads": 12}


def test_missing_parts_are_named_and_the_cli_checks_its_inputs(release, folder, dataset, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns("report_*"))
    with pytest.raises(WeightsNotFoundError) as error:
        load(partial, dataset)
    assert {item.path.parent.name for item in error.value.missing} == {"report_encoder", "report_decoder"}
    assert "--report-ckpt" in str(error.value) and "convert-ckpt" in str(error.value)
    assert load(partial, dataset, report="false").edit([request("x1")])[0].explanation is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError) as error:
        load(tmp_path / "empty", dataset)
    assert "model_index.json" in str(error.value) and "clip-vit-base-patch32" in str(error.value)
    assert len(error.value.missing) == 4
    # without --report-ckpt the folder has no report head; a wrong checkpoint is refused, naming it
    assert convert(release, tmp_path / "no-report") == 0
    assert not (tmp_path / "no-report" / "report_encoder").exists()
    from cfbench.cli import main

    status = main(["--quiet", "convert-ckpt", str(release["prior_ckpt"]), "--format", "cxr-irgen", "--config",
                   str(release["sd_config"]), "--clip-vision", str(release["clip"]), "--out", str(tmp_path / "bad")])
    assert status != 0 and not (tmp_path / "bad").exists()
    assert main(["--quiet", "convert-ckpt", str(release["diffusion_ckpt"]), "--format", "cxr-irgen",
                 "--out", str(tmp_path / "bad")]) != 0  # --config and --clip-vision are required


def test_reference_token_changes_the_output_and_zeros_when_none(folder, dataset):
    model = load(folder, dataset, report="false")
    plain = load(folder, dataset, report="false", reference="none")
    results = model.edit([request("x1"), request("x2"), request("x3")])
    assert [r.info["reference_id"] for r in results] == ["t1", "t2", None]  # smallest id with the same labels
    without = plain.edit([request("x1"), request("x3")])
    assert np.abs(results[0].image - without[0].image).max() > 1e-3  # the appended reference token matters
    np.testing.assert_array_equal(results[2].image, without[1].image)  # no same-label training sample: zeros
    assert model.identity()["reference"]["label_vectors"] == 2 and plain.identity()["reference"] == "none: zeros"
    assert model.references.choose(release_codes(EFFUSION), "t1") == "t3"  # never a sample's own image
    embedding = model.reference_embedding("t1")
    assert embedding.shape == (1, 1, 32) and embedding.abs().sum() > 0


def test_generation_equals_diffusers_pipeline_called_as_released(folder, dataset):
    """sample_diffusion_clipSD.py: prompt_embeds = CLIP(prompt, unpadded) + the reference token, no negative prompt
    (diffusers pads "" to the same length), the folder's PNDM scheduler, latents = the seeded noise."""
    from diffusers import StableDiffusionPipeline

    from cfbench import diffusion

    model = load(folder, dataset, report="false")
    assert type(model.components.scheduler).__name__ == "PNDMScheduler"
    ours = model.edit([request("x1", seed=11)])[0]
    pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    ids = pipeline.tokenizer(ours.info["prompt"], return_tensors="pt").input_ids
    assert ids.shape[1] == ours.info["prompt_tokens"]
    embeds = torch.cat([pipeline.text_encoder(ids)[0], model.reference_embedding("t1")], dim=1)
    noise = diffusion.seeded_noise([11], (4, SIZE // 2, SIZE // 2), torch.device("cpu"))
    reference = pipeline(prompt_embeds=embeds, latents=noise, num_inference_steps=STEPS, guidance_scale=7.5,
                         height=SIZE, width=SIZE, output_type="pt").images
    np.testing.assert_allclose(ours.image, reference[0].mean(dim=0).numpy(), atol=1e-4)


def test_batch_equals_one_by_one_and_seeds_decide(folder, dataset):
    model = load(folder, dataset)
    requests = [request("x1", 1), request("x2", 2), request("x3", 3), request("x1", 4)]  # three prompt lengths
    together = model.edit(requests)
    assert len({r.info["prompt_tokens"] for r in together}) == 3
    for alone_request, result in zip(requests, together):
        alone = model.edit([alone_request])[0]
        np.testing.assert_allclose(result.image, alone.image, atol=1e-5)
        assert alone.explanation == result.explanation and isinstance(result.explanation, str)
    np.testing.assert_array_equal(model.edit([request("x1", 1)])[0].image, model.edit([request("x1", 1)])[0].image)
    assert np.abs(together[0].image - together[3].image).max() > 1e-3  # same labels, another seed
    # as released, every report draws report_max_tokens tokens (text after a </s> kept)
    assert all(r.info["report_tokens"] == 10 and not r.info["report_stopped"] for r in together)
    assert model.identity()["adapter_version"] == 2 and model.identity()["settings"]["report_stop"] == "none"


def test_report_head_stops_at_eos_respects_the_cap_and_equals_the_uncached_loop(folder, dataset):
    from cfbench.autoregressive.report_head import encode_latents, generate_reports
    from cfbench.autoregressive.sampling import draw

    model = load(folder, dataset)
    head = model.report_head
    eos = head.eos_id
    with torch.no_grad():
        head.decoder.final_logits_bias[0, eos] += 4.0  # make the random decoder stop now and then
    latents = torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    seeds = list(range(100, 106))
    free = generate_reports(head, latents, seeds, max_tokens=12, stop_at_eos=False)
    stopped = generate_reports(head, latents, seeds, max_tokens=12, stop_at_eos=True)
    assert all(len(report.tokens) == 12 and not report.stopped for report in free)  # the release: no stop
    assert any(report.stopped for report in stopped) and any(len(r.tokens) > 1 for r in stopped)
    for cut, full in zip(stopped, free):
        assert cut.tokens == full.tokens[:len(cut.tokens)]  # stopping only truncates: same draws
        assert cut.stopped == (eos in full.tokens) and (not cut.stopped or cut.tokens[-1] == eos)
        assert eos not in cut.tokens[:-1]
    # the release's loop: the whole decoder over the sequence at every step, lm_head + final_logits_bias
    states = encode_latents(head, latents)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    tokens = torch.full((6, 1), head.start_id)
    with torch.no_grad():
        for _ in range(12):
            hidden = head.decoder.get_decoder()(input_ids=tokens, encoder_hidden_states=states).last_hidden_state
            logits = head.decoder.lm_head(hidden[:, -1]) + head.decoder.final_logits_bias
            uniforms = torch.stack([torch.rand((), generator=g) for g in generators])
            tokens = torch.cat([tokens, draw(logits, uniforms)[:, None]], dim=1)
    assert [report.tokens for report in free] == tokens[:, 1:].tolist()
    assert free[0].text == head.tokenizer.decode(tokens[0], skip_special_tokens=True).strip()


def test_options_are_checked(folder, dataset):
    with pytest.raises(ValueError, match="report_stop must be one of eos, none"):
        load(folder, dataset, report_stop="never")
    with pytest.raises(ValueError, match="report_max_tokens must be >= 1"):
        load(folder, dataset, report_max_tokens="0")
    with pytest.raises(ValueError, match="native_resolution must be 32"):
        load(folder, dataset, native_resolution="64")
    with pytest.raises(ValueError, match="dataset split"):
        get_model_class("cxr-irgen").load(LoadContext(model_path=folder, options={"native_resolution": str(SIZE)}))


def test_cli_run_writes_images_and_explanations_and_is_evaluated(folder, dataset, tmp_path):
    from cfbench.cli import main

    options = ["--option", f"steps={STEPS}", "--option", f"native_resolution={SIZE}",
               "--option", "report_max_tokens=6"]
    out = tmp_path / "demo-run"
    assert main(["--quiet", "run", "--model", "cxr-irgen", "--model-path", str(folder), "--split", "demo",
                 "--limit", "8", "--resolution", str(SIZE), "--batch-size", "4", "--out", str(out),
                 "--bootstrap", "10", *options]) == 0
    assert len(list((out / "images").glob("*.png"))) == 8 and (out / "metrics.json").is_file()
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(isinstance(line.get("explanation"), str) for line in lines)
    assert "smallest sample_id" in (out / "manifest.json").read_text()  # the reference policy is recorded
    # on a split with reference explanations the ProgEmu text metrics score the reports
    out = tmp_path / "test-run"
    assert main(["--quiet", "run", "--model", "cxr-irgen", "--model-path", str(folder), "--split", "test",
                 "--data", str(dataset), "--resolution", str(SIZE), "--out", str(out), "--evaluator", "none",
                 *options]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert all(metrics[name]["n"] == 3 for name in ("bleu3", "meteor", "rouge_l"))
