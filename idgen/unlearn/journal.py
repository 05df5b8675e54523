"""The run journal: the finished runs of an ``idgen forget`` experiment, so a killed one resumes.

An experiment is many independent runs, one per selection candidate and per method, each repeated
per training seed: 46 runs and 35–85 minutes on two CPU cores for the LFW-62 configs. Each
run's results (and, for the one run whose edited model is kept, that model) are written to
``<output_dir>/journal/`` the moment it ends, atomically and the JSON last, so it marks a complete
entry. The file name hashes
everything the run depends on: the method, the configuration with its seed (minus what only says
where to write), the base recogniser's weights and the photos it trains and is scored on. Running
the same command again reads finished runs instead of repeating them. Every run starts from its own
seed (``run_method``), so the resumed experiment reports exactly the numbers an uninterrupted one
would. Changing the configuration, base or data changes the names, so nothing stale is read.
The journal is deleted once the report is written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ..io import load_module_weights, save_module_weights, write_json_atomic
from ..recognition.data import FaceSet, hash_tensor
from ..models import FaceRecognizer

#: Configuration fields that do not change a run's results (``selection.val_per_class`` does, by
#: changing the photos, which the data fingerprint covers).
_NOT_RESULTS = ("output_dir", "repeats", "save_model", "selection")


def fingerprint(base: FaceRecognizer, *datasets: FaceSet | None) -> str:
    """SHA-256 of the base recogniser's weights and of ``datasets`` (:meth:`FaceSet.digest`): what a
    run starts from and is trained and scored on."""
    digest = hashlib.sha256()
    for name, tensor in base.state_dict().items():
        digest.update(name.encode())
        hash_tensor(digest, tensor)
    for data in datasets:
        digest.update(b"none" if data is None else data.digest().encode())
    return digest.hexdigest()


class RunJournal:
    """The finished runs in ``folder``, each under a :meth:`name`: :meth:`load` one (``None`` if it
    has not finished), :meth:`save` one, count them (:meth:`finished`), :meth:`remove` them all."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def finished(self) -> int:
        """How many runs it holds."""
        return len(list(self.folder.glob("*.json"))) if self.folder.is_dir() else 0

    @staticmethod
    def name(method: str, config, data: str) -> str:
        """The entry of ``method`` run with ``config`` (its seed included) on ``data`` (a
        :func:`fingerprint`)."""
        settings = {k: v for k, v in asdict(config).items() if k not in _NOT_RESULTS}
        key = json.dumps({"method": method, "config": settings, "data": data}, sort_keys=True)
        return f"{method}-seed{config.seed}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"

    def load(self, name: str, base: FaceRecognizer, with_model: bool = False) -> list[dict] | None:
        """The results of a finished run, or None; ``with_model``: with its edited model (``base``'s
        architecture) in ``results[-1]["model"]`` (None if it was saved without one)."""
        entry, weights = self.folder / f"{name}.json", self.folder / f"{name}.safetensors"
        if not entry.is_file() or (with_model and not weights.is_file()):
            return None
        results = json.loads(entry.read_text())
        if with_model:
            model = copy.deepcopy(base)
            load_module_weights(model, weights, "the model this run edits",
                                f"delete {entry.name} and {weights.name} from {self.folder} to run it again")
            results[-1]["model"] = model.eval()
        return results

    def save(self, name: str, results: list[dict], with_model: bool = False) -> None:
        """Record a finished run; ``with_model``: its edited model too (only the runs whose model is
        used are saved with it: a paper-size recogniser is hundreds of megabytes)."""
        if with_model:
            save_module_weights(results[-1]["model"], self.folder / f"{name}.safetensors")
        write_json_atomic(self.folder / f"{name}.json",
                          [{k: v for k, v in row.items() if k != "model"} for row in results])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
