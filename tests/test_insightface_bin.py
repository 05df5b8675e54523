"""insightface verification sets (`.bin`): written and read back equal in every layout the
published files use (Python 2 strings, numpy arrays of bytes, Python 3 bytes), pickles that would run
code refused by name with nothing run, and `idgen eval verify --bin` scoring the same pairs exactly as
`--pairs/--images` does on the photos they were aligned from."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from idgen.errors import DataError
from idgen.eval import read_bin, read_bin_pairs, verify_bin, write_bin
from idgen.faces.occlusion import Occlusion

pytestmark = pytest.mark.usefixtures("one_thread")

#: LFW-like pairs of the vendored photos: ten sets of one matched and one mismatched pair.
MATCHED = [("Aaron_Peirsol", 1, 2), ("Aaron_Peirsol", 1, 3), ("Aaron_Peirsol", 2, 3)]
MISMATCHED = [("Aaron_Peirsol", 1, "Abdullah_Gul", 1), ("Aaron_Peirsol", 2, "Angelina_Jolie", 1),
              ("Abdullah_Gul", 1, "Angelina_Jolie", 1), ("Aaron_Peirsol", 3, "Angelina_Jolie", 1),
              ("Aaron_Peirsol", 3, "Abdullah_Gul", 1)]


def lfw_pairs(sets=10):
    """``[(first, second, same)]`` of file stems, set by set (matched first), as LFW's pairs.txt orders them."""
    pairs = []
    for k in range(sets):
        name, i, j = MATCHED[k % len(MATCHED)]
        first, a, second, b = MISMATCHED[k % len(MISMATCHED)]
        pairs += [(f"{name}_{i:04d}", f"{name}_{j:04d}", True), (f"{first}_{a:04d}", f"{second}_{b:04d}", False)]
    return pairs


def encode(rgb: np.ndarray, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=format, **({"quality": 95} if format == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def crops(faces_dir):
    """112×112 crops of the vendored photos (the centre, resized: the reader does not care how they were made)."""
    out = {}
    for photo in sorted(faces_dir.iterdir()):
        image = Image.open(photo).convert("RGB")
        out[photo.stem] = np.asarray(image.crop((50, 50, 200, 200)).resize((112, 112), Image.BILINEAR))
    return out


def python2_pickle(images: list[bytes], same: list[bool]) -> bytes:
    """``(images, same)`` as Python 2's ``pickle.dump(..., protocol=2)`` wrote insightface's files: the images
    as ``str`` (BINSTRING opcodes), the labels as NEWTRUE / NEWFALSE, written opcode by opcode."""
    out = bytearray(b"\x80\x02" + b"]q\x00(")           # PROTO 2, EMPTY_LIST, BINPUT 0, MARK
    for data in images:
        out += b"T" + struct.pack("<i", len(data)) + data   # BINSTRING
    out += b"e]q\x01("                                   # APPENDS, EMPTY_LIST, BINPUT 1, MARK
    out += b"".join(b"\x88" if s else b"\x89" for s in same)
    return bytes(out + b"e\x86q\x02.")                   # APPENDS, TUPLE2, BINPUT 2, STOP


def test_a_bin_written_here_reads_back_equal(tmp_path, crops):
    pairs = lfw_pairs()
    encoded = [encode(crops[stem]) for first, second, _ in pairs for stem in (first, second)]
    same = [s for _, _, s in pairs]
    write_bin(tmp_path / "lfw.bin", encoded, same)
    assert [p.name for p in tmp_path.iterdir()] == ["lfw.bin"]   # written atomically: no temporary left
    with open(tmp_path / "lfw.bin", "rb") as handle:
        assert pickle.load(handle) == (encoded, same)   # the plain format insightface's own reader expects
    images, labels = read_bin_pairs(tmp_path / "lfw.bin")
    assert images == encoded and labels.dtype == bool and labels.tolist() == same
    pairs_set = read_bin(tmp_path / "lfw.bin")
    assert len(pairs_set) == 20 and len(pairs_set.images) == 40 and pairs_set.same.tolist() == same
    for data, image in zip(encoded, pairs_set.images):
        assert image.shape == (112, 112, 3) and np.array_equal(image, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert pairs_set.folds().tolist() == [k // 2 for k in range(20)]   # 10 blocks of consecutive pairs
    assert np.bincount(pairs_set.folds(3)).tolist() == [7, 7, 6]       # as KFold(3) splits 20


@pytest.mark.parametrize("layout", ["python2-str", "numpy-protocol2", "numpy-protocol4", "numpy1-protocol2",
                                    "bytes-protocol2"])
def test_every_layout_of_the_published_files_reads_the_same(tmp_path, crops, layout):
    pairs = lfw_pairs(3)
    encoded = [encode(crops[stem], "PNG") for first, second, _ in pairs for stem in (first, second)]
    same = [s for _, _, s in pairs]
    if layout == "python2-str":
        data = python2_pickle(encoded, same)
    elif layout.startswith("numpy"):
        arrays = [np.frombuffer(e, dtype=np.uint8) for e in encoded]
        data = pickle.dumps((arrays, same), protocol=int(layout[-1]))
    elif layout == "numpy1-protocol2":   # numpy < 2 names its module numpy.core (a GLOBAL opcode: name\n)
        arrays = [np.frombuffer(e, dtype=np.uint8) for e in encoded]
        data = pickle.dumps((arrays, same), protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    else:   # Python 3 bytes at protocol 2 are written as _codecs.encode(text, "latin1")
        data = pickle.dumps((encoded, same), protocol=2)
        assert b"_codecs" in data
    (tmp_path / "set.bin").write_bytes(data)
    images, labels = read_bin_pairs(tmp_path / "set.bin")
    assert images == encoded and labels.tolist() == same


class RunsCode:
    """What a hostile .bin holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_files(tmp_path, crops):
    marker = tmp_path / "ran"
    good = encode(crops["Aaron_Peirsol_0001"])
    source = b"open('ran', 'w').write('x')"   # GLOBAL builtins.exec, the source, TUPLE1, REDUCE: exec(source)
    return marker, {
        "top.bin": (pickle.dumps(RunsCode(marker)), r"the pickle asks for (posix|os)\.system"),
        "inside.bin": (pickle.dumps(([good, RunsCode(marker)], [True])), r"the pickle asks for (posix|os)\.system"),
        "exec.bin": (b"\x80\x02cbuiltins\nexec\n" + b"X" + struct.pack("<I", len(source)) + source + b"\x85R.",
                     r"the pickle asks for builtins\.exec"),
        "objects.bin": (pickle.dumps(([np.array([RunsCode(marker)], dtype=object)], [])),
                        r"an object array \(dtype object\) is not image data"),
    }


def test_a_pickle_that_would_run_code_is_refused_by_name_and_nothing_runs(tmp_path, crops, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker, files = hostile_files(tmp_path, crops)
    for name, (data, message) in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}: (refused: )?.*{message}"):
            read_bin(tmp_path / name)
    assert not marker.exists() and not (tmp_path / "ran").exists()


def test_malformed_sets_are_data_errors_naming_the_file(tmp_path, crops):
    good = encode(crops["Aaron_Peirsol_0001"])
    cases = {
        "odd.bin": (pickle.dumps(([good] * 3, [True, False])), "3 images for 2 pairs"),
        "labels.bin": (pickle.dumps(([good] * 2, ["yes"])), "issame_list must hold booleans"),
        "shape.bin": (pickle.dumps({"bins": []}), "expected a pickled pair"),
        "items.bin": (pickle.dumps(([good, 7], [True])), "image 1 is a int, not encoded image bytes"),
        "truncated.bin": (pickle.dumps(([good] * 2, [True]))[:100], "not an insightface verification set"),
        "image.bin": (pickle.dumps(([good, b"not an image"], [True])), "image 1: not an image file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}.*{message}"):
            read_bin(tmp_path / name)
    with pytest.raises(DataError, match="missing.bin: no such file"):
        read_bin(tmp_path / "missing.bin")


def test_eval_verify_refuses_a_hostile_bin_before_loading_anything(tmp_path, crops, capsys, monkeypatch):
    from idgen.cli import main

    monkeypatch.chdir(tmp_path)
    marker, files = hostile_files(tmp_path, crops)
    (tmp_path / "evil.bin").write_bytes(files["top.bin"][0])
    assert main(["eval", "verify", "--bin", str(tmp_path / "evil.bin"), "--recognizer", "mobilefacenet"]) == 1
    assert "evil.bin: refused: the pickle asks for" in capsys.readouterr().err and not marker.exists()
    assert main(["eval", "verify", "--bin", "x.bin", "--pairs", "p.txt", "--images", "i"]) == 1
    assert "--bin is instead of --pairs/--images" in capsys.readouterr().err
    assert main(["eval", "verify", "--pairs", "p.txt"]) == 1
    assert "give --pairs and --images" in capsys.readouterr().err


@pytest.mark.parametrize("occlude", [[], ["--occlude", "patch", "--severity", "0.3", "--occlusion-seed", "2"]])
def test_eval_verify_bin_scores_the_pairs_as_the_pairs_route_does(tmp_path, faces_dir, capsys, occlude):
    """The same 20 pairs two ways: `--pairs/--images` on the photos (dlib finds and aligns each face) and
    `--bin` on those aligned crops (PNG, so nothing is lost): the same folds, thresholds, accuracy and AUC;
    with `--occlude`, both routes occlude the same aligned crop of each pair's second photo alike."""
    pytest.importorskip("dlib")
    from idgen.cli import main
    from idgen.faces import FaceAnalyzer

    detector = FaceAnalyzer.from_backend("dlib", None)
    aligned, images = {}, tmp_path / "images"
    for photo in sorted(faces_dir.iterdir()):
        aligned[photo.stem] = detector.detect(photo)[0].aligned
        person = photo.stem.rsplit("_", 1)[0]
        (images / person).mkdir(parents=True, exist_ok=True)
        (images / person / photo.name).symlink_to(photo)
    lines = ["10\t1"]
    for k in range(10):
        lines += ["\t".join(map(str, MATCHED[k % 3])), "\t".join(map(str, MISMATCHED[k % 5]))]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    pairs = lfw_pairs()
    write_bin(tmp_path / "set.bin", [encode(aligned[stem], "PNG") for a, b, _ in pairs for stem in (a, b)],
              [s for _, _, s in pairs])

    common = ["--recognizer", "mobilefacenet", "--detector", "dlib", "--flip", "--json", *occlude]
    assert main(["eval", "verify", "--pairs", str(tmp_path / "pairs.txt"), "--images", str(images), *common]) == 0
    by_pairs = json.loads(capsys.readouterr().out)
    assert main(["eval", "verify", "--bin", str(tmp_path / "set.bin"), *common]) == 0
    by_bin = json.loads(capsys.readouterr().out)
    assert by_pairs["missing_faces"] == 0 and by_pairs["pairs"] == by_bin["pairs"] == 20
    assert by_bin["images"] == 40 and by_pairs["images"] == 5   # the pairs route embeds each photo once
    assert by_bin["accuracy"] == by_pairs["accuracy"] and by_bin["fold_accuracies"] == by_pairs["fold_accuracies"]
    assert by_bin["auc"] == by_pairs["auc"] and by_bin["tar_at_far_1e3"] == by_pairs["tar_at_far_1e3"]
    assert np.allclose(by_bin["thresholds"], by_pairs["thresholds"], atol=1e-5)   # midpoints of the same scores
    assert by_bin["auc"] > 0.5   # the real recogniser tells Aaron Peirsol from the others

    from idgen.faces import FaceAnalyzer

    occlusion = Occlusion("patch", 0.3, 2) if occlude else None
    direct = verify_bin(FaceAnalyzer.from_backend("dlib", "mobilefacenet", flip=True), tmp_path / "set.bin",
                        progress=False, occlusion=occlusion)
    assert direct.accuracy == by_bin["accuracy"] and direct.auc == by_bin["auc"]
    assert by_pairs["occlusion"] == by_bin["occlusion"] == (None if occlusion is None else asdict(occlusion))
