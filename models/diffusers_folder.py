"""The shared bases of adapters that run a local diffusers pipeline folder (InstructX2X and its ablations,
RoentGen, PIE): options common to them, loading through :func:`cfbench.diffusion.components.load_diffusion_components`
with the checks every such adapter needs, and the weights identity; plus the text-prompted Stable
Diffusion variant (RoentGen, PIE). Not registered models themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cfbench.api.model import CounterfactualModel, LoadContext
from cfbench.api.options import ModelOptions
from cfbench.api.registry import resolve_model_path
from cfbench.core.config import PACKAGE_DATA_DIR

if TYPE_CHECKING:  # pragma: no cover
    from cfbench.diffusion.components import DiffusionComponents


@dataclass(frozen=True)
class DiffusionOptions(ModelOptions):
    """Options every diffusers-folder adapter has: ``steps`` (denoising steps; subclasses set the default),
    ``native_resolution`` (the side in pixels the networks run at; the benchmark's images are
    resized to it and the outputs back to the request's side) and ``precision`` (auto: fp16 on CUDA, fp32 on CPU)."""

    steps: int = 100
    native_resolution: int = 512
    precision: str = "auto"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"precision": ("auto", "fp32", "fp16", "bf16")}

    def check(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.native_resolution < 8:
            raise ValueError(f"native_resolution must be >= 8 px, got {self.native_resolution}")


class DiffusersFolderModel(CounterfactualModel):
    """Loads ``settings_class`` from the options and a ``pipeline_class`` folder whose UNet takes
    ``unet_in_channels`` inputs; subclasses add :meth:`prepare` (more state) and :meth:`identity_extra`."""

    settings_class: ClassVar[type[DiffusionOptions]] = DiffusionOptions
    # Bumped whenever a default changes the numbers the adapter produces (e.g. a release behaviour made the
    # default), so that a run folder made before never resumes with, or is mixed with, the new behaviour.
    # None: the adapter's numbers never changed; its identity then carries no version.
    adapter_version: ClassVar[int | None] = None
    pipeline_class: ClassVar[str] = "StableDiffusionPipeline"
    unet_in_channels: ClassVar[int] = 4
    native_resolution = 512

    def __init__(self, components: DiffusionComponents, settings: DiffusionOptions, weights_folder: Path):
        self.components = components
        self.settings = settings
        self.weights_folder = Path(weights_folder)

    @classmethod
    def scheduler_choice(cls, settings: DiffusionOptions) -> str:
        """"ddim" or "folder" (see :func:`cfbench.diffusion.components.load_diffusion_components`)."""
        return "ddim"

    @classmethod
    def load(cls, context: LoadContext) -> DiffusersFolderModel:
        from cfbench import diffusion

        settings = cls.settings_class.from_options(context.options)
        kind = context.dataset.info.get("kind") if context.dataset is not None else None
        folder = resolve_model_path(cls, context.model_path, kind)
        components = diffusion.load_diffusion_components(
            folder, cls.pipeline_class, device=context.device, dtype=cls.weights_dtype(settings, context.device),
            expected_unet_in_channels=cls.unet_in_channels, scheduler=cls.scheduler_choice(settings),
        )
        if "native_resolution" not in context.options:  # the side the folder's networks were made for
            settings = dataclasses.replace(settings, native_resolution=components.native_resolution)
        diffusion.check_resolution(components, settings.native_resolution, folder)
        model = cls(components, settings, folder)
        model.prepare(context)
        return model

    @classmethod
    def weights_dtype(cls, settings: DiffusionOptions, device) -> Any:
        """The dtype the networks are loaded in (:func:`cfbench.diffusion.components.resolve_dtype`)."""
        from cfbench import diffusion

        return diffusion.resolve_dtype(settings.precision, device)

    def prepare(self, context: LoadContext) -> None:
        """Anything beyond the networks a model needs (e.g. pseudo masks); nothing by default."""

    def identity(self) -> dict[str, Any]:
        from cfbench import diffusion

        identity = {"weights_sha256": diffusion.weights_identity(self.weights_folder)}
        if self.weights_folder.resolve().is_relative_to(PACKAGE_DATA_DIR.resolve()):
            identity["source"] = f"phantom checkpoint shipped with cfbench ({self.weights_folder.name})"
        if self.adapter_version is not None:  # every option, defaults included, and the behaviour's version
            identity["adapter_version"] = self.adapter_version
            identity["settings"] = dataclasses.asdict(self.settings)
        return {**identity, "native_resolution": self.settings.native_resolution, **self.identity_extra()}

    def identity_extra(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class TextPromptedOptions(DiffusionOptions):
    """Options of Stable Diffusion models prompted with text: ``prompt`` ("target_report": the target
    study's impression, or "instruction"; see :func:`cfbench.api.prompts.text_prompt`) and ``scheduler``
    ("folder": the one saved with the weights, or "ddim")."""

    prompt: str = "target_report"
    scheduler: str = "folder"

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        **DiffusionOptions.choices, "prompt": ("target_report", "instruction"), "scheduler": ("folder", "ddim")}


class TextPromptedModel(DiffusersFolderModel):
    """A Stable Diffusion folder (4-channel UNet) sampled with the scheduler the options choose."""

    settings_class: ClassVar[type[DiffusionOptions]] = TextPromptedOptions

    @classmethod
    def scheduler_choice(cls, settings: TextPromptedOptions) -> str:
        return settings.scheduler

    def identity_extra(self) -> dict[str, Any]:
        return {"scheduler": type(self.components.scheduler).__name__}
