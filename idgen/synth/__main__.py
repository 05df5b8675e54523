"""``python -m idgen.synth --config synth.yaml [key=value ...]``, the entry point for
``accelerate launch -m idgen.synth``; the same as ``idgen dataset generate``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["dataset", "generate", *sys.argv[1:]]))
