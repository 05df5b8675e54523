"""The dataset engine end to end, on CPU.

The generator here is :class:`PhotoJitterGenerator`, a stand-in that is NOT a diffusion model: it
renders one of the vendored LFW photos chosen by the identity vector, with seeded jitter, and
scrambles a quarter of its outputs into faceless tiles so the consistency filter (dlib + the real
MobileFaceNet) has failures to reject and regenerate.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"


def overrides(output, mobilefacenet_path):
    return [
        f"output_dir={output}", "identities.count=12", "identities.dim=64", "identities.max_cosine=0.3",
        "variation.images_per_identity=4", "variation.min_cosine=0.95",
        "generator.type=photo", f"generator.photos={FACES}", "generator.failure_rate=0.25", "generator.size=200",
        f"filter.recognizer=mobilefacenet:{mobilefacenet_path}", "filter.threshold=0.4",
        "runtime.batch_size=6", "runtime.progress=false", "writers.shard_size=20",
    ]


def tree(folder: Path) -> dict:
    """Every file of a dataset folder and its bytes, except the per-process journal."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "journal"}


def command(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return [sys.executable, "-m", "idgen.cli", "dataset", "generate", *args], env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mobilefacenet_path):
    """An uninterrupted single-process run, in this process."""
    pytest.importorskip("dlib")
    from idgen.synth import SynthConfig, generate_dataset

    output = tmp_path_factory.mktemp("synth") / "reference"
    stats = generate_dataset(SynthConfig.load(None, overrides(output, mobilefacenet_path)))
    return output, stats


def test_small_run_writes_every_format_and_a_matching_manifest(reference, tmp_path):
    output, stats = reference
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    images = sorted(p.relative_to(output).as_posix() for p in (output / "images").rglob("*.jpg"))
    assert sorted(r["file"] for r in records) == images
    assert len(records) == stats["images"] == stats["counts"]["kept"]
    for record in records:
        data = (output / record["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert record["file"] == f"images/{record['identity']}/{record['index']}.jpg"
        assert record["identity"] == f"id{record['label']:06d}"
        assert record["similarity"] >= 0.4
        assert 0.95 - 1e-6 <= record["perturbation"] <= 1.0
        assert record["generator"]["type"] == "photo"
    # a quarter of the outputs are faceless: they were rejected and regenerated
    counts = stats["counts"]
    assert counts["no_face"] > 0
    assert counts["generated"] == counts["kept"] + counts["no_face"] + counts["low_similarity"] + counts["duplicate"]
    assert any(r["attempt"] > 0 for r in records)
    assert counts["kept"] + counts["dropped"] == 12 * 4
    assert stats["identities"]["max_cosine"] <= 0.3

    import datasets

    loaded = datasets.load_dataset(str(output), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(records)
    first = loaded[0]
    assert first["identity"] == records[0]["identity"] and first["seed"] == records[0]["seed"]
    assert first["image"].size == (200, 200)
    assert len(list((output / "data").glob("*.parquet"))) == -(-len(records) // 20)
    import pyarrow.parquet as pq   # written by Dataset.to_parquet: content-defined chunking, as push_to_hub writes
    assert all(b"content_defined_chunking" in pq.ParquetFile(shard).metadata.metadata
               for shard in (output / "data").glob("*.parquet"))

    members = {}
    for shard in sorted((output / "webdataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                members[member.name] = tar.extractfile(member).read()
    for record in records:
        key = f"{record['identity']}_{record['index']}"
        assert members[f"{key}.jpg"] == (output / record["file"]).read_bytes()
        assert members[f"{key}.cls"] == str(record["label"]).encode()
        assert json.loads(members[f"{key}.json"]) == record
    card = (output / "README.md").read_text()
    assert f"{len(records)} images of 12 synthetic identities" in card
    assert (output / "plots" / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_kill_and_resume_gives_identical_files(reference, tmp_path, mobilefacenet_path):
    output = tmp_path / "killed"
    argv, env = command(*overrides(output, mobilefacenet_path))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = output / "journal" / "rank-0-of-1.jsonl"
    deadline = time.time() + 600  # generous: the shared CI machine can be slow to start the run
    while time.time() < deadline and process.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "manifest.jsonl").exists()
    finished_before = journal.read_bytes().count(b"\n")
    assert 3 <= finished_before < 12

    subprocess.run(argv, env=env, check=True, capture_output=True)
    lines = journal.read_text().splitlines()
    assert len(lines) == 12 and len({json.loads(line)["identity"] for line in lines}) == 12
    assert tree(output) == tree(reference[0])


@pytest.mark.slow
def test_two_processes_give_identical_files(reference, tmp_path, mobilefacenet_path):
    output = tmp_path / "two"
    _, env = command()
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "idgen.cli", "dataset", "generate", *overrides(output, mobilefacenet_path)]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in (output / "journal").iterdir()) == ["rank-0-of-2.jsonl", "rank-1-of-2.jsonl"]
    assert tree(output) == tree(reference[0])


def test_resuming_with_other_settings_is_refused(reference, mobilefacenet_path):
    from idgen.errors import ConfigError
    from idgen.synth import SynthConfig, generate_dataset

    changed = overrides(reference[0], mobilefacenet_path) + ["filter.threshold=0.6"]
    with pytest.raises(ConfigError, match="other settings"):
        generate_dataset(SynthConfig.load(None, changed))


def run_engine(folder, generator, image_filter, count=4, per_identity=2, progress=False, **settings):
    """``DatasetEngine.run_shard`` on its own (no models): returns the journal entries."""
    import torch

    from idgen.identity import random_identities
    from idgen.synth import SynthConfig
    from idgen.synth.engine import DatasetEngine
    from idgen.synth.journal import Journal

    config = SynthConfig.from_dict({
        "output_dir": str(folder), "identities": {"count": count}, "variation": {"images_per_identity": per_identity},
        **settings, "runtime": {"batch_size": 4, "queue_size": 2, "progress": progress},
    })
    engine = DatasetEngine(config, generator, image_filter)
    engine.targets = random_identities(count, 16, generator=torch.Generator().manual_seed(0))
    journal = Journal(folder / "journal").open()
    engine.run_shard(journal, set())
    journal.close()
    return Journal(folder / "journal").entries()


def grey_images(id_embeds, generators, **conditions):
    import torch
    from PIL import Image

    return [Image.new("RGB", (16, 16), (int(torch.rand(1, generator=g) * 255),) * 3) for g in generators]


def test_filtering_overlaps_the_next_generator_batch(tmp_path):
    """The worker analyses batch 1 while the main thread generates batch 2: the filter's first call
    waits until the generator has been called again, which a serial loop would never do."""
    import threading

    from idgen.synth.consistency import KeepAll

    second_batch, calls, overlapped = threading.Event(), [], []

    def generator(id_embeds, generators, **conditions):
        calls.append(len(id_embeds))
        if len(calls) == 2:
            second_batch.set()
        return grey_images(id_embeds, generators)

    class WaitingFilter(KeepAll):
        def embed(self, images):
            if not overlapped:
                overlapped.append(second_batch.wait(timeout=60))
            return super().embed(images)

    entries = run_engine(tmp_path, generator, WaitingFilter())
    assert overlapped == [True]
    assert calls == [4, 4] and len(entries) == 4


def test_rejected_images_are_regenerated_at_most_max_retries_times(tmp_path):
    from idgen.synth.consistency import KeepAll, Verdict

    seen = []

    class RejectAll(KeepAll):
        def judge(self, embeddings, reference, kept=()):
            return [Verdict(False, "no_face", None, None) for _ in embeddings]

    def generator(id_embeds, generators, **conditions):
        seen.extend(g.initial_seed() for g in generators)
        return grey_images(id_embeds, generators)

    entries = run_engine(tmp_path, generator, RejectAll(), count=3, per_identity=2, filter={"max_retries": 2})
    assert len(seen) == 3 * 2 * 3 and len(set(seen)) == len(seen)  # 1 try + 2 retries per image, new seeds
    for entry in entries.values():
        assert entry["images"] == []
        assert entry["counts"]["generated"] == entry["counts"]["no_face"] == 6
        assert entry["counts"]["dropped"] == 2
    assert not (tmp_path / "images").exists()


def test_the_progress_bar_counts_every_render_and_grows_with_retries(tmp_path, monkeypatch):
    """The one bar of a run ticks per image made, so it moves (with an ETA) while the filter keeps
    nothing yet; each retry adds to its total, and the images kept so far stand beside it."""
    import tqdm

    import idgen.synth.engine
    from idgen.synth.consistency import KeepAll, Verdict

    bars = []

    class Recorded(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = []
            bars.append(self)

        def update(self, n=1):
            super().update(n)
            self.seen.append((self.n, self.total))

    class RejectFirstTry(KeepAll):
        def reference_for(self, target, embeddings):
            return {"rounds": 0}      # one per identity

        def judge(self, embeddings, reference, kept=()):
            reference["rounds"] += 1
            keep = reference["rounds"] > 1
            return [Verdict(keep, "kept" if keep else "no_face", None, None) for _ in embeddings]

    monkeypatch.setattr(idgen.synth.engine, "tqdm", Recorded)
    entries = run_engine(tmp_path, grey_images, RejectFirstTry(), count=3, per_identity=2, progress=True)
    assert sum(len(entry["images"]) for entry in entries.values()) == 6
    (bar,) = bars
    assert bar.seen[0] == (4, 6)           # the first batch of renders, before anything was kept
    assert bar.seen[-1] == (12, 12)        # 6 first tries + 6 retries
    assert bar.postfix == "kept=6"


# ---------------------------------------------------------------- output folders and faults
def small_config(folder, **settings):
    """Three identities × two grey images, one image per shard, no models (see ``grey_images``)."""
    from idgen.synth import SynthConfig

    return SynthConfig.from_dict({
        "output_dir": str(folder), "identities": {"count": 3, "dim": 16, "steps": 5},
        "variation": {"images_per_identity": 2}, "filter": {"enabled": False}, "writers": {"shard_size": 1},
        "runtime": {"batch_size": 4, "progress": False, "device": "cpu"}, **settings})


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_process_that_does_not_see_the_shared_output_folder_names_the_file_and_the_fix(tmp_path, monkeypatch):
    """On many machines the output folder must be one shared folder: process 1, on a machine whose
    folder does not show the identities process 0 wrote, stops with an error naming the file."""
    from idgen.errors import DataError
    from idgen.synth import engine

    class OtherMachine:
        is_main_process, process_index = False, 1

        def wait_for_everyone(self):
            pass

    monkeypatch.setattr(engine, "SHARED_FILE_WAIT", 0.2)
    with pytest.raises(DataError) as raised:
        engine.DatasetEngine(small_config(tmp_path), None, None, 1, 2).sample_or_load_identities(OtherMachine())
    assert str(raised.value).startswith(f"{tmp_path / 'identities.safetensors'}: process 1 (on ")
    assert "output_dir must be one folder that every machine mounts (NFS, Lustre, ...)" in str(raised.value)


def test_a_folder_holding_other_files_is_refused_and_left_untouched(tmp_path, capsys):
    """Four parquet shards, a card, statistics and an ``images/alice`` class that idgen did not write:
    ``dataset generate`` names the folder and exits 1 before any work, and every file stays as it was."""
    from idgen.cli import main

    out = tmp_path / "theirs"
    for name in ("data/train-00000-of-00010.parquet", "data/train-00003-of-00010.parquet", "README.md",
                 "stats.json", "images/alice/0.jpg"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(f"their {name}".encode())
    before = files_of(out)
    code = main(["dataset", "generate", f"output_dir={out}", "generator.type=photo", f"generator.photos={FACES}",
                 "filter.enabled=false", "identities.count=2", "runtime.progress=false"])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
    assert len(lines) == 1 and f"{out} is not empty and holds no earlier output" in lines[0]
    assert "give output_dir a new or empty folder" in lines[0]
    assert files_of(out) == before


def test_a_full_disk_leaves_no_partial_shards_and_the_rerun_completes(tmp_path, monkeypatch):
    """The disk fills after two of six parquet shards: a one-line OutputError naming the file and the
    fix, no ``data/`` folder, no temporary file, and ``load_dataset`` finds no data (rather than the
    ImageFolder it would otherwise read as if the dataset were whole); the same call then resumes and
    writes all six rows."""
    import errno

    import datasets

    from idgen.errors import OutputError
    from idgen.io import is_temporary
    from idgen.synth import generate_dataset

    out, written, to_parquet = tmp_path / "ds", [], datasets.Dataset.to_parquet

    def fill_up(dataset, where, *args, **kwargs):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        written.append(where)
        return to_parquet(dataset, where, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "to_parquet", fill_up)
    with pytest.raises(OutputError, match="No space left on device; the disk is full.*run the same command again"):
        generate_dataset(small_config(out), generator=grey_images)
    assert not (out / "data").exists() and not (out / "webdataset").exists()
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    assert "Unfinished" in (out / "README.md").read_text()
    with pytest.raises(datasets.exceptions.DataFilesNotFoundError):
        datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache0"))

    monkeypatch.setattr(datasets.Dataset, "to_parquet", to_parquet)
    stats = generate_dataset(small_config(out), generator=grey_images)
    assert stats["images"] == 6 and len(list((out / "data").iterdir())) == 6
    assert len(datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))) == 6


def test_a_read_only_folder_is_refused_before_any_image_is_made(tmp_path, monkeypatch):
    import errno
    import tempfile

    from idgen.errors import OutputError
    from idgen.synth import generate_dataset

    out = tmp_path / "ds"
    out.mkdir()

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", dir)

    def never(*args, **kwargs):
        raise AssertionError("generated before the folder was checked")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match=f"cannot write to {out} \\(output_dir\\): Read-only file system"):
        generate_dataset(small_config(out), generator=never)
    assert list(out.iterdir()) == []


def test_resuming_removes_what_killed_writes_left_and_only_that(tmp_path):
    """A kill -9 leaves ``.0.jpg.XXXXXXXX.tmp`` files and hidden staging folders; the resumed run
    deletes those, keeps a file someone added, and gives the same dataset."""
    from idgen.io import is_temporary
    from idgen.synth import generate_dataset

    out = tmp_path / "ds"
    generate_dataset(small_config(out), generator=grey_images)
    finished = files_of(out)
    leftovers = [out / "images" / "id000001" / ".0.jpg.k2j4_x9a.tmp", out / ".data.abcd1234.partial" / "x.parquet",
                 out / "journal" / ".rank-0-of-1.jsonl.0a1b2c3d.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (out / "images" / "id000001" / "notes.txt").write_text("mine")
    generate_dataset(small_config(out), generator=grey_images)
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    assert files_of(out) == {**finished, "images/id000001/notes.txt": b"mine"}


def test_shards_are_replaced_only_where_idgen_wrote_them(tmp_path):
    """A rerun swaps ``data/`` for the new shards as a whole; a file someone put in ``data/`` stops
    it (one line naming the file) and stays, with the shards beside it."""
    from idgen.errors import OutputError
    from idgen.synth import generate_dataset

    out = tmp_path / "ds"
    generate_dataset(small_config(out), generator=grey_images)
    shards = files_of(out / "data")
    generate_dataset(small_config(out), generator=grey_images)
    assert files_of(out / "data") == shards
    (out / "data" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files idgen did not write there \\('notes.txt'\\)"):
        generate_dataset(small_config(out), generator=grey_images)
    assert files_of(out / "data") == {**shards, "notes.txt": b"mine"}
