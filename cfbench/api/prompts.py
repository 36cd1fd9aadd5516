"""The text prompt of text-conditioned baselines (RoentGen, PIE): the target report or the instruction."""

from __future__ import annotations

from cfbench.api.model import EditRequest


def text_prompt(request: EditRequest, source: str, model_name: str) -> str:
    """The text a text-conditioned baseline is prompted with: the request's ``target_report`` (the target
    study's impression) or its ``instruction``; ValueError naming the sample when the report is missing."""
    if source == "instruction":
        return request.instruction
    if not request.target_report:
        raise ValueError(f"sample {request.sample_id!r} has no target_report (the target study's impression) "
                         f"for {model_name}'s prompt: build the dataset with `cfbench data build mimic --reports DIR`, "
                         "or pass --option prompt=instruction")
    return request.target_report
