"""Reversibility (Monteiro et al., ICLR 2023): edit with the instruction, then edit the output with the inverse
instruction, and measure how far the result is from the input.

Without touching the runner, the second edit is just another run: :func:`reverse_split` writes a derived split
whose prior images are a finished run's outputs, whose instructions are the inverses from the grammar
(:meth:`cfbench.core.findings.Operation.inverted`: add <-> remove, levels swapped, in reverse order) and whose
targets are the original inputs. Run the same model on it (resumable and sharded like any run); its
``mae_to_target`` is then the reversibility distance, mean |edit(edit(x, i), inverse(i)) - x| in intensity units
(0 = perfectly reversible: the target is the original input, same pose). On phantoms the derived split keeps the
true lesion masks and the original input as its exact counterfactual, so ``mae_to_true_counterfactual`` is the
same distance and locality is measured around the same lesion. Opt-in: it doubles generation.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from cfbench.core.findings import render_instruction
from cfbench.datasets.edit_dataset import DatasetWriter
from cfbench.datasets.pseudo_masks import DATASET_MASKS
from cfbench.evaluation.evaluate import has_true_lesions
from cfbench.evaluation.results import open_run_dataset
from cfbench.leaderboard.table_model import run_id
from cfbench.runs.store import load_generated, read_results


def reverse_split(run_folder: str | Path, out: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write the derived split of a run's finished samples into ``out`` (same split name; see the module doc)."""
    run_folder, out = Path(run_folder), Path(out)
    manifest, dataset = open_run_dataset(run_folder, Path(data_dir) if data_dir else None)
    finished = {record["sample_id"] for record in read_results(run_folder)}
    phantom = has_true_lesions(dataset)
    writer = DatasetWriter(out)
    written = 0
    for sample in dataset:
        if sample.sample_id not in finished:
            continue
        operations = [operation.inverted() for operation in reversed(sample.operations)]
        reverse = replace(sample, instruction=render_instruction(operations), operations=operations,
                          past_dicom_id=f"{sample.sample_id}-edited", current_dicom_id=sample.past_dicom_id,
                          labels=dict(sample.past_labels), past_labels=dict(sample.labels),
                          target_report=None, progression=None, reference_explanation=None)
        original = dataset.past_image(sample)
        writer.add(reverse, past=load_generated(run_folder, sample.sample_id, dataset.resolution), current=original,
                   counterfactual=original if phantom else None,
                   lesion_mask=dataset.lesion_mask(sample) if phantom else None)
        written += 1
    if not written:
        raise ValueError(f"run {run_folder} has no finished samples to reverse")
    if (dataset.root / DATASET_MASKS).is_file():
        shutil.copyfile(dataset.root / DATASET_MASKS, out / DATASET_MASKS)
    writer.close(info={**dataset.info, "reversed_from": {"run": str(run_folder), "run_id": run_id(run_folder, manifest),
                                                         "dataset": str(dataset.root), "n": written}})
    return out
