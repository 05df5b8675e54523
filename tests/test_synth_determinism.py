"""A dataset's bytes do not depend on how it was run: batch size, process count, machines, interruptions.

The generator is the embedded mini model (a real diffusion pipeline, whose convolutions and matrix
products round differently for different batch shapes on CPU), 4 steps. Every run has one torch
thread per process: on CPU the convolutions' bits also depend on the thread count (docs/reliability.md,
Determinism).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")  # the in-process runs match the subprocesses' OMP_NUM_THREADS=1

#: ``python -m`` arguments of the dataset command, the way ``accelerate launch`` starts it too.
GENERATE = ("-m", "idgen.cli", "dataset", "generate")


def settings(output, batch_size=16, *extra):
    """4 identities × 4 images of the mini model, 4 steps, the filter a mini dataset gets at a
    threshold that rejects some images (their retries fill later batches); shards of 4 images."""
    return [f"output_dir={output}", "generator.type=mini", "generator.num_inference_steps=4",
            "identities.count=4", "identities.dim=128", "filter.recognizer=mobilefacenet",
            "variation.images_per_identity=4", "filter.threshold=0.1", "writers.shard_size=4",
            f"runtime.batch_size={batch_size}", "runtime.progress=false", *extra]


def tree(folder: Path) -> dict:
    """Every file of a dataset folder and its bytes (images, manifest, parquet, tar, card, ...),
    except the per-process journal; ``config.json`` without its ``runtime`` section, which records
    the runtime settings of the run that made the folder."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.relative_to(folder).parts[0] != "journal"}
    saved = json.loads(files.pop("config.json"))
    assert saved["config"].pop("runtime")["batch_size"] > 0
    files["config.json"] = json.dumps(saved).encode()
    return files


def run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, timeout=600)


def test_an_image_does_not_depend_on_its_batch():
    """12 images made in one call are bit-identical to the same images made in calls of 5, in
    reverse order (other neighbours, positions and padding)."""
    from idgen.identity import random_identities
    from idgen.synth.generators import Arc2FaceGenerator

    generator = Arc2FaceGenerator.mini("cpu", num_inference_steps=4)
    ids = random_identities(12, 128, generator=torch.Generator().manual_seed(0))

    def make(rows):
        return generator(ids[rows], [torch.Generator().manual_seed(row) for row in rows])

    together = make(list(range(12)))
    apart = {row: image for rows in ([11, 10, 9, 8, 7], [6, 5, 4, 3, 2], [1, 0])
             for row, image in zip(rows, make(rows))}
    differing = [row for row in range(12) if not np.array_equal(np.asarray(together[row]), np.asarray(apart[row]))]
    assert differing == []
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run with the default batches of 16 images."""
    pytest.importorskip("dlib")
    output = tmp_path_factory.mktemp("determinism") / "reference"
    run(*GENERATE, *settings(output))
    files = tree(output)
    counts = json.loads(files["stats.json"])["counts"]
    assert counts["generated"] > counts["kept"] >= 8  # some images were retried
    assert "manifest.jsonl" in files  # and at least two shards of each format:
    assert sum(name.startswith("data/") for name in files) >= 2
    assert sum(name.startswith("webdataset/") for name in files) >= 2
    return files


def test_batches_of_one_give_identical_files(reference, tmp_path):
    run(*GENERATE, *settings(tmp_path, 1))
    assert tree(tmp_path) == reference


@pytest.mark.slow
def test_two_processes_give_identical_files(reference, tmp_path):
    run("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", *GENERATE, *settings(tmp_path))
    assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == ["rank-0-of-2.jsonl", "rank-1-of-2.jsonl"]
    assert tree(tmp_path) == reference


def machines(output_dir, batch_size=16) -> list[subprocess.Popen]:
    """Two "machines" on loopback, one process each: ``accelerate launch --num_machines 2
    --machine_rank 0|1`` on CPU (gloo), rendezvous at 127.0.0.1 on a free port, one shared output
    folder."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
         "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
         "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
         *GENERATE, *settings(output_dir, batch_size)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for rank in (0, 1)]


def kill_machine(launcher: subprocess.Popen) -> None:
    """SIGKILL a "machine": the launcher and every process under it (torchrun starts its workers in
    their own sessions, so killing the launcher's process group alone leaves them running)."""
    import psutil

    try:
        tree = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    launcher.wait()


def finish(processes, timeout=900) -> None:
    for process in processes:
        _, error = process.communicate(timeout=timeout)
        assert process.returncode == 0, error.decode()[-2000:]


def check_two_machine_dataset(output_dir: Path, reference: dict) -> None:
    """Byte for byte the one-process dataset; one journal per rank; ``idgen dataset verify`` passes."""
    from idgen.synth.verify import verify_dataset

    assert sorted(p.name for p in (output_dir / "journal").iterdir()) == ["rank-0-of-2.jsonl", "rank-1-of-2.jsonl"]
    assert tree(output_dir) == reference
    assert verify_dataset(output_dir)["images"] == json.loads(reference["stats.json"])["images"]


@pytest.mark.slow
def test_two_machines_give_identical_files(reference, tmp_path):
    finish(machines(tmp_path))
    check_two_machine_dataset(tmp_path, reference)


@pytest.mark.slow
def test_a_killed_machine_resumes_to_identical_files(reference, tmp_path):
    """Machine 1 is killed (its launcher and process, SIGKILL) once it has finished one of its two
    identities; machine 0, left without its peer, is stopped too (as a cluster scheduler ends the
    job). The same two commands again finish the dataset: the one-process bytes. Batches of one
    image leave machine 1 several generator calls between its two identities."""
    running = machines(tmp_path, batch_size=1)
    journal = tmp_path / "journal" / "rank-1-of-2.jsonl"
    deadline = time.time() + 900
    while time.time() < deadline and running[1].poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert running[1].poll() is None, f"machine 1 ended before it could be killed: {running[1].stderr.read()[-2000:]}"
    kill_machine(running[1])
    assert journal.read_bytes().count(b"\n") == 1
    try:
        running[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_machine(running[0])
    assert not (tmp_path / "manifest.jsonl").exists()

    finish(machines(tmp_path))
    check_two_machine_dataset(tmp_path, reference)
    finished = [json.loads(line)["identity"] for line in journal.read_text().splitlines()]
    assert sorted(finished) == [1, 3]


def test_micro_batch_is_a_setting_of_the_dataset_and_batch_size_is_not():
    """A resume may change ``runtime.batch_size``, not ``generator.micro_batch`` (it changes the
    images' last bits): only the latter changes the fingerprint a resume must match."""
    from idgen.synth import SynthConfig

    def fingerprint(*overrides):
        return SynthConfig.load(None, settings("out", *overrides)).fingerprint()

    assert fingerprint(1) == fingerprint(16)
    assert fingerprint(16, "generator.micro_batch=4") != fingerprint(16)


class Interrupted(Exception):
    pass


def test_resuming_with_another_batch_size_gives_identical_files(tmp_path):
    """8 identities, batches of 4, stopped at the second generator call: identity 0 (the first
    batch) is finished. Resumed with batches of 16, the result is the uninterrupted run's (batches
    of 4), byte for byte. The filter is off here, so that where the run stops does not depend on
    which images it rejects."""
    from idgen.synth import SynthConfig, generate_dataset
    from idgen.synth.generators import build_generator
    from idgen.synth.journal import Journal

    def config(folder, batch_size):
        return SynthConfig.load(None, settings(folder, batch_size, "identities.count=8", "filter.enabled=false"))

    model = build_generator(config(tmp_path, 4).generator, "cpu", 128)
    generate_dataset(config(tmp_path / "uninterrupted", 4), generator=model)
    calls = []

    def first_batch_only(id_embeds, generators, **conditions):
        calls.append(len(id_embeds))
        if len(calls) > 1:
            raise Interrupted
        return model(id_embeds, generators, **conditions)

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        generate_dataset(config(resumed, 4), generator=first_batch_only)
    assert list(Journal(resumed / "journal").entries()) == [0]
    assert not (resumed / "manifest.jsonl").exists()

    generate_dataset(config(resumed, 16), generator=model)
    assert tree(resumed) == tree(tmp_path / "uninterrupted")
