"""Stage 4, shared generator loops (diffusion): what diffusion adapters share instead of copying.

Owns: loading a local diffusers folder, precision policy, grayscale VAE encode/decode, text encoding and
seeded per-sample noise (:mod:`~cfbench.diffusion.components`); the InstructPix2Pix guidance and DDIM
editing loop (:mod:`~cfbench.diffusion.instruct_pix2pix`); the text-to-image loop
(:mod:`~cfbench.diffusion.text_to_image`); edit-friendly DDPM inversion and its masked reverse pass
(:mod:`~cfbench.diffusion.ddpm_inversion`, RadEdit); a BERT text encoder with CXR-BERT's projection loaded
without remote code (:mod:`~cfbench.diffusion.bert_text`); Region-Specific Editing maps (:mod:`~cfbench.diffusion.rse`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`.

The public functions are re-exported here, so an adapter writes ``from cfbench import diffusion`` and
calls ``diffusion.edit_with_instruct_pix2pix(...)``. Importing this package imports torch.
"""

from cfbench.diffusion.components import (
    PRECISIONS,
    DiffusionComponents,
    check_resolution,
    decode_latents,
    decode_latents_rgb,
    encode_images,
    encode_text,
    load_diffusion_components,
    missing_pipeline_parts,
    noise_to_timestep,
    posterior_moments,
    resize_images,
    resolve_dtype,
    seeded_noise,
    weights_identity,
)
from cfbench.diffusion.ddpm_inversion import (
    PASTE_BACK_MODES,
    GuidedText,
    Inversion,
    edit_from_inversion,
    invert_edit_friendly,
)
from cfbench.diffusion.instruct_pix2pix import (
    InstructPix2PixConditioning,
    edit_with_instruct_pix2pix,
    predict_guided_noise,
    predict_text_and_image_noise,
)
from cfbench.diffusion.text_to_image import KeepRegion, generate_from_text

__all__ = [
    "PASTE_BACK_MODES", "PRECISIONS", "DiffusionComponents", "GuidedText", "Inversion", "edit_from_inversion",
    "invert_edit_friendly", "InstructPix2PixConditioning", "KeepRegion", "check_resolution",
    "decode_latents", "decode_latents_rgb", "edit_with_instruct_pix2pix", "encode_images", "encode_text", "generate_from_text",
    "load_diffusion_components", "missing_pipeline_parts", "noise_to_timestep", "posterior_moments", "predict_guided_noise",
    "predict_text_and_image_noise", "resize_images", "resolve_dtype", "seeded_noise", "weights_identity",
]
