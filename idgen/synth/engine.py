"""The dataset engine: identities in, a filtered, resumable, multi-process face dataset out.

How a run flows (one process of ``accelerate launch -m idgen.cli dataset generate``, or the only one):

1. Identities are sampled once (process 0) into ``identities.safetensors``, and the pose bank, if
   any, is resolved once into ``poses.json``.
2. This process takes identities ``rank, rank + world, ...`` that the journal does not list as
   finished. Each image *slot* ``(identity, n)`` and each *try* at it has its own seed derived from
   ``(seed, identity, n, try)``, and its prompt and pose come from ``(seed, identity, n)``; the
   generator adapters render in fixed micro-batches (:class:`~idgen.synth.generators.FixedBatchAdapter`),
   so an image never depends on batch or process count.
3. The main thread fills generator batches with slots from several identities and hands each
   batch to a worker thread through a bounded queue, then goes straight on to the next batch. The
   worker analyses, filters and writes the images, and sends rejected slots back for another try.
   An identity is finished when all its slots are kept or out of tries; only then is one line
   appended to the journal (after its images are on disk, each written atomically).
4. Process 0 waits for the others and assembles the manifest, parquet and WebDataset shards and
   the dataset card from the journal, in a fixed order.

Killed at any moment, the same command resumes: finished identities are skipped, unfinished ones
are redone from their first slot (producing the same bytes), a truncated last journal line is
dropped, and assembly is simply redone.
"""

from __future__ import annotations

import functools
import json
import queue
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..io import write_bytes_atomic, write_json_atomic
from .config import SynthConfig
from .consistency import Verdict
from .generators import derive_seed
from .identities import GaussianPrior, perturb_within_cosine, sample_identities
from .journal import Journal
from ..faces.expression import expression_rows, read_expressions
from .poses import PoseBank, resolve_pose_bank

REASONS = ("kept", "no_face", "turned_away", "low_similarity", "duplicate")
#: How long a process waits to see a file process 0 wrote into the output folder (network filesystems
#: may show a new file to other machines only after their cached listing expires).
SHARED_FILE_WAIT = 60.0


@dataclass
class Slot:
    """One image to generate: the ``index``-th image of ``identity``, at try ``attempt``.

    ``conditions`` go to the generator (``prompt``, ``pose``); ``choices`` go to the manifest
    (``prompt_index``, ``prompt``, ``pose_index``, ``expression_index``)."""

    identity: int
    index: int
    attempt: int
    seed: int
    vector: torch.Tensor
    perturbation: float
    conditions: dict
    choices: dict


@dataclass
class _IdentityProgress:
    """What the worker knows about one identity while its images are being made."""

    round_size: int
    results: dict = field(default_factory=dict)   # index -> (slot, image) of the current round
    reference: Optional[np.ndarray] = None
    kept: dict = field(default_factory=dict)      # index -> (record, embedding)
    counts: dict = field(default_factory=lambda: {"generated": 0, **{r: 0 for r in REASONS}, "dropped": 0})


def identity_name(index: int, count: int) -> str:
    return f"id{index:0{max(6, len(str(count - 1)))}d}"


def _expression_bank(spec) -> np.ndarray:
    """``variation.expressions``: a list of FLAME vectors, or a .npy / .json file of them."""
    if isinstance(spec, list):
        try:
            return expression_rows(spec).numpy()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"variation.expressions: {exc}") from None
    return read_expressions(spec)


class DatasetEngine:
    def __init__(self, config: SynthConfig, generator=None, image_filter=None, process_index: int = 0,
                 num_processes: int = 1):
        self.config = config
        self.out = Path(config.output_dir)
        self.rank, self.world = process_index, num_processes
        self.generator = generator
        self.filter = image_filter
        self.targets: Optional[torch.Tensor] = None
        self.poses: Optional[PoseBank] = None
        self.expressions: Optional[np.ndarray] = None   # K × 55 FLAME parameters

    # ------------------------------------------------------------------ identities
    def sample_or_load_identities(self, state) -> dict:
        from ..io import read_safetensors, save_safetensors_atomic

        path = self.out / "identities.safetensors"
        if state.is_main_process and not path.exists():
            ids = self.config.identities
            prior = None
            if ids.prior:
                prior = GaussianPrior.fit(_load_embeddings(ids.prior))
            vectors, stats = sample_identities(
                ids.count, ids.dim, ids.max_cosine, seed=self.config.seed, prior=prior, neighbors=ids.neighbors,
                steps=ids.steps, device=self.config.runtime.device or state.device,
                progress=self.config.runtime.progress)
            write_json_atomic(self.out / "identities.json", stats.to_dict())
            save_safetensors_atomic({"identities": vectors.contiguous()}, path)
        state.wait_for_everyone()
        _see_shared_file(path, state.process_index)
        self.targets = read_safetensors(path, "it is written when the dataset starts: generate into a new "
                                        "output folder")["identities"]
        return json.loads((self.out / "identities.json").read_text())

    def load_expression_bank(self, state) -> None:
        """The expression bank ``variation.expressions`` names, written once (process 0) into
        ``expressions.json``, which a resumed run reads."""
        spec = self.config.variation.expressions
        if spec is None:
            return
        path = self.out / "expressions.json"
        if state.is_main_process and not path.exists():
            write_json_atomic(path, _expression_bank(spec).tolist())
        state.wait_for_everyone()
        self.expressions = read_expressions(path)

    def load_pose_bank(self, state) -> None:
        """The pose bank ``variation.poses`` names, resolved once (process 0) into ``poses.json``."""
        if self.config.variation.poses is None:
            return
        path = self.out / "poses.json"
        if state.is_main_process and not path.exists():
            def analyzer():
                from ..faces import FaceAnalyzer

                settings = self.config.filter
                return FaceAnalyzer.from_backend(settings.detector, None, det_size=settings.det_size)

            resolve_pose_bank(self.config.variation.poses, analyzer, self.config.runtime.progress).save(path)
        state.wait_for_everyone()
        _see_shared_file(path, state.process_index)
        self.poses = PoseBank.load(path)

    # ------------------------------------------------------------------ slots
    def _choice(self, identity: int, index: int, kind: str, count: int) -> int:
        """Which of ``count`` prompts (or poses) image ``index`` of ``identity`` uses: the identity
        walks its own shuffle of the list, so it repeats an entry only after using them all, and a
        retry keeps the prompt and pose of its image (only the noise changes)."""
        return _shuffled(self.config.seed, identity, kind, count)[index % count]

    def make_slot(self, identity: int, index: int, attempt: int) -> Slot:
        seed = derive_seed(self.config.seed, identity, index, attempt)
        target = self.targets[identity]
        variation = self.config.variation
        vector = perturb_within_cosine(target[None], variation.min_cosine,
                                       torch.Generator().manual_seed(seed ^ 0x5EED))[0]
        conditions, choices = {}, {}
        if variation.prompts:
            chosen = self._choice(identity, index, "prompt", len(variation.prompts))
            conditions["prompt"] = variation.prompts[chosen]
            choices.update(prompt_index=chosen, prompt=variation.prompts[chosen])
        if self.poses is not None:
            chosen = self._choice(identity, index, "pose", len(self.poses))
            conditions["pose"] = self.poses.keypoints[chosen]
            choices["pose_index"] = chosen
        if self.expressions is not None:
            chosen = self._choice(identity, index, "expression", len(self.expressions))
            conditions["expression"] = self.expressions[chosen]
            choices["expression_index"] = chosen
        return Slot(identity, index, attempt, seed, vector, float(vector @ target), conditions, choices)

    def generate(self, slots: list[Slot]) -> list:
        conditions = {key: [s.conditions[key] for s in slots] for key in slots[0].conditions}
        generators = [torch.Generator().manual_seed(s.seed) for s in slots]
        images = self.generator(torch.stack([s.vector for s in slots]), generators, **conditions)
        if len(images) != len(slots):
            raise ConfigError(f"the generator returned {len(images)} images for {len(slots)} requests")
        return images

    # ------------------------------------------------------------------ the worker's side
    def _image_path(self, identity: int, index: int) -> Path:
        return self.out / "images" / identity_name(identity, self.config.identities.count) / f"{index}.jpg"

    def _finish_round(self, identity: int, progress: _IdentityProgress) -> tuple[list[Slot], int]:
        """Filter a complete round of one identity; returns the slots to try again and how many
        images were kept."""
        results = [progress.results[i] for i in sorted(progress.results)]
        progress.results = {}
        images = [image for _, image in results]
        embeddings = self.filter.embed(images)
        if progress.reference is None:
            progress.reference = self.filter.reference_for(self.targets[identity].numpy(), embeddings)
        kept_embeddings = [e for _, e in progress.kept.values() if e is not None]
        verdicts: list[Verdict] = self.filter.judge(embeddings, progress.reference, kept_embeddings)
        retry, kept_now = [], 0
        for (slot, image), verdict in zip(results, verdicts):
            progress.counts["generated"] += 1
            progress.counts[verdict.reason] += 1
            if verdict.kept:
                progress.kept[slot.index] = (self._write_image(slot, image, verdict), verdict.embedding)
                kept_now += 1
            elif slot.attempt < self.config.filter.max_retries:
                retry.append(self.make_slot(identity, slot.index, slot.attempt + 1))
            else:
                progress.counts["dropped"] += 1
        progress.round_size = len(retry)
        return retry, kept_now

    def _write_image(self, slot: Slot, image, verdict: Verdict) -> dict:
        import hashlib
        import io

        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=self.config.writers.jpeg_quality)
        data = buffer.getvalue()
        path = self._image_path(slot.identity, slot.index)
        write_bytes_atomic(path, data)
        record = {
            "file": path.relative_to(self.out).as_posix(), "label": slot.identity,
            "identity": identity_name(slot.identity, self.config.identities.count), "index": slot.index,
            "seed": slot.seed, "attempt": slot.attempt, "perturbation": round(slot.perturbation, 6),
            "similarity": None if verdict.similarity is None else round(verdict.similarity, 6),
            "sha256": hashlib.sha256(data).hexdigest(), **slot.choices,
        }
        return record

    def _journal_entry(self, identity: int, progress: _IdentityProgress) -> dict:
        embeddings = [e for _, e in progress.kept.values() if e is not None]
        centroid = np.mean(embeddings, 0) if embeddings else None
        return {
            "identity": identity,
            "images": [progress.kept[i][0] for i in sorted(progress.kept)],
            "counts": progress.counts,
            "centroid": None if centroid is None else [round(float(v), 6) for v in centroid / np.linalg.norm(centroid)],
        }

    def _worker(self, work: queue.Queue, feedback: queue.Queue, journal: Journal) -> None:
        states: dict[int, _IdentityProgress] = {}
        failed = False
        while (item := work.get()) is not None:
            if failed:
                continue  # keep draining so the main thread never blocks on a full queue
            try:
                for slot, image in zip(*item):
                    progress = states.setdefault(slot.identity, _IdentityProgress(self.config.variation.images_per_identity))
                    progress.results[slot.index] = (slot, image)
                    if len(progress.results) < progress.round_size:
                        continue
                    retry, kept = self._finish_round(slot.identity, progress)
                    if retry:
                        feedback.put(("retry", retry, kept))
                    else:
                        journal.append(self._journal_entry(slot.identity, states.pop(slot.identity)))
                        feedback.put(("done", slot.identity, kept))
            except BaseException as exc:  # handed to the main thread, which re-raises it
                failed = True
                feedback.put(("error", exc, 0))

    # ------------------------------------------------------------------ the main loop
    def run_shard(self, journal: Journal, done: set[int]) -> None:
        config = self.config
        mine = [i for i in range(self.rank, config.identities.count, self.world) if i not in done]
        per_identity = config.variation.images_per_identity
        work: queue.Queue = queue.Queue(maxsize=config.runtime.queue_size)
        feedback: queue.Queue = queue.Queue()
        worker = threading.Thread(target=self._worker, args=(work, feedback, journal), daemon=True)
        worker.start()
        todo, pending = deque(mine), deque()
        active = 0
        # one bar per process, in renders: every image made ticks it, retries add to its total, so
        # its rate and ETA are the generator's whatever the filter keeps (the kept count is beside it)
        bar = tqdm(total=len(mine) * per_identity, desc=f"images[{self.rank}]", unit="img",
                   disable=not config.runtime.progress)
        kept_so_far = 0

        def handle(message):
            nonlocal active, kept_so_far
            kind, payload, kept = message
            kept_so_far += kept
            bar.set_postfix(kept=kept_so_far, refresh=False)
            if kind == "error":
                raise payload
            if kind == "retry":
                pending.extendleft(reversed(payload))  # finish started identities first
                bar.total += len(payload)
                bar.refresh()
            else:
                active -= 1

        try:
            while True:
                while not feedback.empty():
                    handle(feedback.get())
                while len(pending) < config.runtime.batch_size and todo:
                    identity = todo.popleft()
                    pending.extend(self.make_slot(identity, n, 0) for n in range(per_identity))
                    active += 1
                if not pending:
                    if active == 0:
                        break
                    handle(feedback.get())
                    continue
                batch = [pending.popleft() for _ in range(min(config.runtime.batch_size, len(pending)))]
                images = self.generate(batch)
                bar.update(len(batch))
                work.put((batch, images))
        finally:
            work.put(None)
            worker.join()
            bar.close()
        while not feedback.empty():
            handle(feedback.get())


def _see_shared_file(path: Path, process: int) -> None:
    """Wait until ``path``, which process 0 wrote, is visible to this process: at once on one machine,
    within :data:`SHARED_FILE_WAIT` seconds on a network filesystem that caches directory listings.
    Raises :class:`~idgen.errors.DataError` when it never shows up: the machines do not share the
    output folder."""
    deadline = time.monotonic() + SHARED_FILE_WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise DataError(
                f"{path}: process {process} (on {socket.gethostname()}) has not seen this file in the "
                f"{SHARED_FILE_WAIT:g} s since process 0 wrote it: on many machines, output_dir must be one folder that every "
                "machine mounts (NFS, Lustre, ...), not a folder of each machine's own disk")
        time.sleep(0.5)


@functools.lru_cache(maxsize=4096)
def _shuffled(seed: int, identity: int, kind: str, count: int) -> list[int]:
    return random.Random(derive_seed(seed, identity, kind)).sample(range(count), count)


def _load_embeddings(path: str) -> torch.Tensor:
    from ..io import read_safetensors

    if not Path(path).is_file():
        raise DataError(f"{path}: embeddings file for the identity prior not found (make one with `idgen embed`)")
    tensors = read_safetensors(path, "make the identity prior's embeddings with `idgen embed`")
    if not tensors:
        raise DataError(f"{path}: holds no tensor; make the identity prior's embeddings with `idgen embed`")
    return tensors.get("normed", next(iter(tensors.values()))).float()
