"""The idgen command line: help, embed with bad files, one-line errors."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from idgen.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "embed" in out and "eval" in out
    for command in build_parser()._subparsers._group_actions[0].choices.values():
        assert command.format_help()


def test_embed_folder_reports_skipped_files(tmp_path, faces_dir, dlib_analyzer):
    photos = tmp_path / "photos"
    shutil.copytree(faces_dir, photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.full((200, 200, 3), 80, np.uint8)).save(photos / "wall.png")
    out = tmp_path / "emb.safetensors"
    done = subprocess.run([sys.executable, "-m", "idgen.cli", "embed", str(photos), "--output-file", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    index = json.loads(out.with_suffix(".json").read_text())
    tensors = load_file(str(out))
    assert len(index["files"]) == 5 == tensors["embeddings"].shape[0]
    assert tensors["normed"].shape == (5, 128)
    reasons = {s["file"]: s["reason"] for s in index["skipped"]}
    assert set(reasons) == {"broken.jpg", "wall.png"}
    assert "not an image file" in reasons["broken.jpg"] and reasons["wall.png"] == "no face found"
    row = index["files"].index("Aaron_Peirsol_0001.jpg")
    expected = dlib_analyzer.get_face(faces_dir / "Aaron_Peirsol_0001.jpg").embedding
    assert np.allclose(tensors["embeddings"][row], expected, atol=1e-5)
    assert "skipped broken.jpg" in done.stderr


def test_embed_folder_reads_each_file_once(tmp_path, faces_dir, dlib_analyzer, monkeypatch):
    """The reason a file was skipped comes from the analysis itself, not from reading the file again."""
    import idgen.faces.image
    from idgen.faces.embedding_index import embed_folder

    reads = Counter()
    image_file = idgen.faces.image.image_file   # every read of an image file starts by checking it here
    monkeypatch.setattr(idgen.faces.image, "image_file", lambda path: reads.update([Path(path).name]) or image_file(path))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(faces_dir / "Aaron_Peirsol_0001.jpg", photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.full((200, 200, 3), 80, np.uint8)).save(photos / "wall.png")
    files = sorted(str(p) for p in photos.iterdir())
    index = embed_folder(dlib_analyzer, files, tmp_path / "emb.safetensors", root=photos)
    assert index["files"] == ["Aaron_Peirsol_0001.jpg"]
    assert [s["file"] for s in index["skipped"]] == ["broken.jpg", "wall.png"]
    assert reads == {"Aaron_Peirsol_0001.jpg": 1, "broken.jpg": 1, "wall.png": 1}


def test_errors_are_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "idgen.cli", "embed", str(tmp_path / "nope"), "--output-file", "x.safetensors"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == f"idgen: error: {tmp_path / 'nope'}: not a folder"


def _subcommands(parser=None):
    """Every leaf parser (``idgen embed``, ``idgen eval verify``, ...) with its full name."""
    parser = parser or build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, child in action.choices.items():
            if child._subparsers:
                yield from ((f"{name} {sub}", leaf) for sub, leaf in _subcommands(child))
            else:
                yield name, child


def test_shared_options_have_one_name_and_one_default(monkeypatch):
    import argparse

    import app

    for variable in ("IDGEN_DETECTOR", "IDGEN_RECOGNIZER", "IDGEN_INSIGHTFACE_ROOT", "IDGEN_DEVICE", "IDGEN_DTYPE"):
        monkeypatch.delenv(variable, raising=False)
    parsers = dict(_subcommands(), app=app.build_parser())
    seen: dict = {}
    for name, parser in parsers.items():
        for action in parser._actions:
            for flag in action.option_strings:
                seen.setdefault(flag, {})[name] = (action.default, action.help)
    # Every shared option (idgen.cli.common + the model options) is the same everywhere: same default, same help.
    from idgen.cli import common

    scratch = argparse.ArgumentParser()
    for add in (common.add_embedding_options, common.add_sampling_options):
        add(scratch)
    common.add_model_arguments(scratch)  # brings add_face_options and add_device_options
    shared = {flag for action in scratch._actions for flag in action.option_strings} - {"-h", "--help"}
    for flag in shared:
        assert len({default for default, _ in seen[flag].values()}) == 1, (flag, seen[flag])
    expected = {"--detector": "auto", "--recognizer": "auto", "--insightface-root": "~/.insightface",
                "--device": None, "--seed": 0, "--steps": None, "--guidance": None}
    for flag, default in expected.items():
        assert {default} == {d for d, _ in seen[flag].values()}, flag
    for command in ("embed", "eval verify", "edit replace", "edit restyle", "generate", "app"):
        assert command in seen["--detector"], command
    for command in ("edit replace", "edit restyle", "generate", "app"):
        assert {"--device", "--tiny", "--model", "--instantid-base", "--infiniteyou", "--lcm-lora"} <= {
            flag for flag, users in seen.items() if command in users}, command


def test_auto_face_backends_are_dlib_for_analysis_and_each_models_own_for_generation():
    from idgen.application import ModelHub, ModelSettings
    from idgen.application.hub import ANALYSIS_FACE_BACKENDS, resolve_face_backends

    assert resolve_face_backends("auto", "auto", ANALYSIS_FACE_BACKENDS) == ("dlib", "dlib")
    hub = ModelHub(ModelSettings())
    assert hub.face_backends("arc2face") == ("antelopev2", "arcface.onnx")
    assert hub.face_backends("instantid") == ("antelopev2", "glintr100.onnx")
    assert hub.face_backends("infiniteyou") == ("antelopev2", "ir_se50:recognition_arcface_ir_se50.pth")
    chosen = ModelHub(ModelSettings(detector="dlib", recognizer="mobilefacenet:m.onnx"))
    assert {chosen.face_backends(style) for style in ("arc2face", "instantid", "infiniteyou")} == {
        ("dlib", "mobilefacenet:m.onnx")}


def test_each_style_analyses_photos_with_the_recogniser_its_model_was_trained_on(tmp_path, monkeypatch):
    """InfiniteYou's analyser embeds with facexlib's IR-SE50 from the antelopev2 folder; InstantID's and
    Arc2Face's ask for their own files there (glintr100.onnx, arcface.onnx), not for one shared analyser."""
    import torch
    from tiny_models import TINY_IR_SE, ir_se_state_dict

    from idgen.application import ModelHub, ModelSettings
    from idgen.errors import ModelFilesMissingError
    from idgen.faces import analyzer as analyzer_module
    from idgen.faces.trained import IRSEFileRecognizer

    pack = tmp_path / "models" / "antelopev2"
    pack.mkdir(parents=True)
    torch.save(ir_se_state_dict(**TINY_IR_SE), pack / "recognition_arcface_ir_se50.pth")
    monkeypatch.setattr(analyzer_module, "InsightFaceDetector", lambda *args, **kwargs: "the antelopev2 detector")
    hub = ModelHub(ModelSettings(insightface_root=str(tmp_path), mini_fallback=False))
    infiniteyou = hub.analyzer("infiniteyou")
    assert isinstance(infiniteyou.recognizer, IRSEFileRecognizer) and infiniteyou.detector == "the antelopev2 detector"
    assert infiniteyou.recognizer.path == pack / "recognition_arcface_ir_se50.pth"
    with pytest.raises(ModelFilesMissingError, match="antelopev2/glintr100.onnx"):
        hub.analyzer("instantid")
    with pytest.raises(ModelFilesMissingError, match="antelopev2/arcface.onnx"):
        hub.analyzer("arc2face")
    assert hub.loaded() == ["analyzer:infiniteyou"] and hub.analyzer("infiniteyou") is infiniteyou


def test_failures_are_one_line_with_a_reason(tmp_path, faces_dir, capsys):
    photo = str(faces_dir / "Aaron_Peirsol_0001.jpg")
    cases = [
        (["eval", "verify", "--pairs", str(tmp_path / "pairs.txt"), "--images", str(tmp_path)], "pairs.txt"),
        (["edit", "restyle", "--photo", photo, "--output-file", str(tmp_path / "x.png"), "--model", str(tmp_path / "nothing"),
          "--detector", "dlib", "--recognizer", "dlib"], "cannot load the arc2face model"),
        (["generate", "--random-identity", "--style", "instantid", "--tiny", "--output-dir", str(tmp_path / "o")],
         "InstantID needs a face photo"),
    ]
    for argv, reason in cases:
        assert main(argv) == 1, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
        assert len(errors) == 1 and reason in errors[0], (argv, errors)  # (library warnings may precede it)


def test_generate_help_says_which_model_runs_and_how_to_choose(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "embedded mini model (64x64 faces, offline" in text and "--model mini forces it" in text
    assert "--model FOLDER runs a saved Arc2Face pipeline" in text and "--style instantid or infiniteyou" in text
    assert "'mini' (the embedded model" in text   # the --model flag itself names the choice
    assert "`idgen doctor` lists the models on this machine" in text
    from idgen.application import ModelSettings
    from idgen.cli.common import describe_style

    assert describe_style("instantid", ModelSettings(instantid="InstantX/InstantID")).endswith("(--instantid is set)")
    assert describe_style("arc2face", ModelSettings(model="mini")).startswith("the embedded mini model")


def test_dataset_generate_help_says_which_generator_runs_and_points_to_doctor(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["dataset", "generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "else the embedded mini model (64x64 faces, offline" in text and "$IDGEN_MODEL=mini forces it" in text
    assert "published Arc2Face (FoivosPar/Arc2Face on SD 1.5) when its weights are downloaded" in text
    assert "`idgen doctor` lists the models on this machine" in text
    assert "accelerate launch -m idgen.cli dataset generate" in text


def test_operating_system_errors_are_one_line_naming_the_path_and_the_fix(tmp_path, faces_dir, capsys, monkeypatch):
    """--output-file naming a folder where a file goes is refused before any face is analysed; a disk that
    fills during the work (an OSError no command foresaw) prints the path, the reason and the fix."""
    import errno

    import idgen.faces.embedding_index

    def disk_full(analyzer, files, out, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(idgen.faces.embedding_index, "embed_folder", disk_full)
    folder = tmp_path / "emb"
    folder.mkdir()
    for out, expected in ((folder, f"{folder} is a folder; give --output-file a file name"),
                          (tmp_path / "e.safetensors", f"{tmp_path / 'e.safetensors'}: No space left on device; "
                                                       "the disk is full: free space on it or write elsewhere")):
        assert main(["embed", str(faces_dir), "--output-file", str(out)]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
        assert errors == [f"idgen: error: {expected}"]
