"""``python -m cfbench.cli`` (and ``torchrun -m cfbench.cli``, ``accelerate launch -m cfbench.cli``)."""

import sys

from cfbench.cli import main

sys.exit(main())
