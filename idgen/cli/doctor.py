"""``idgen doctor``: which models are on this machine and how to get the missing ones."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="which models are on this machine, and the command that downloads each missing one",
        description="List each model family (the embedded mini model, Arc2Face, the insightface antelopev2 "
                    "pack, InstantID, InfiniteYou, the LCM-LoRAs): which files are present, which are missing "
                    "or broken (a git-lfs pointer, a cut-off download), and the `hf download` command that "
                    "gets them. Offline and fast: it looks at files only and loads no model. It looks where "
                    "the other commands look: the hub cache, and the folders the IDGEN_* variables name. "
                    "Exit status 0 when every family is complete, 1 otherwise.")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..application.doctor import report
    from ..application.hub import ModelSettings

    text, complete = report(ModelSettings.from_environment(tiny=False))
    print(text)
    return 0 if complete else 1
