"""Built-in model adapters (importable as ``cfbench.models``). Importing this package registers them."""

from cfbench.models import reference  # noqa: F401  (registers identity, ground-truth, true-counterfactual)
from cfbench.models import degradations  # noqa: F401  (registers degrade-<family>, the validity suite's references)
from cfbench.models import instructx2x  # noqa: F401  (registers instructx2x, its ablations, instructpix2pix)
from cfbench.models import roentgen  # noqa: F401  (registers roentgen, a text-to-image baseline)
from cfbench.models import pie  # noqa: F401  (registers pie, iterated image-to-image editing)
from cfbench.models import radedit  # noqa: F401  (registers radedit, DDPM-inversion editing with masks)
from cfbench.models import biomedjourney  # noqa: F401  (registers biomedjourney, trainable InstructPix2Pix)
from cfbench.models import llm_cxr  # noqa: F401  (registers llm-cxr, report -> VQ-GAN tokens -> image)
from cfbench.models import progemu  # noqa: F401  (registers progemu, image + progression -> image + interpretation)
from cfbench.models import cxr_irgen  # noqa: F401  (registers cxr-irgen, CheXpert labels + reference -> image + report)
