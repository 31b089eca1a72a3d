"""``python -m trainer_ext ...`` (and ``accelerate launch -m trainer_ext evaluate ...``): the ``trainer-ext`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
