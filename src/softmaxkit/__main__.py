"""``python -m softmaxkit`` (and ``torchrun -m softmaxkit``): the same as the ``softmaxkit`` console script."""

import sys

from softmaxkit.cli import main

sys.exit(main())
