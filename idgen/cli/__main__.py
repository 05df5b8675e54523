"""``python -m idgen.cli ARGS``: the ``idgen`` command, runnable as a module so that
``accelerate launch -m idgen.cli dataset generate …`` (or ``recognizer train``) starts it on every
process."""

import sys

from . import main

sys.exit(main())
