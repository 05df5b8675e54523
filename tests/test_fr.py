"""`idgen fr`: MobileFaceNet and margin heads against their formulas, a trained folder used as an
`idgen.faces` recogniser, and (slow) a short training on real LFW View 1 people that must verify
held-out View 1 test pairs clearly better than chance."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import one_thread  # noqa: F401  (a fixture)

from idgen.fr import MarginHead, MobileFaceNet



def test_mobilefacenet_shapes_and_parameter_count():
    model = MobileFaceNet().eval()
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.3e6  # the paper's ~1 M parameters
    assert MobileFaceNet(64, width=0.5, input_size=64).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 64)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_heads_penalise_only_the_true_class(kind):
    head = MarginHead(8, 5, kind, s=10.0, m=0.3)
    embeddings = torch.randn(4, 8)
    labels = torch.tensor([0, 3, 1, 4])
    logits = head(embeddings, labels)
    cosine = torch.nn.functional.normalize(embeddings) @ torch.nn.functional.normalize(head.weight).T
    expected = cosine.clone()
    rows = torch.arange(4)
    true = cosine[rows, labels]
    expected[rows, labels] = torch.cos(torch.acos(true) + 0.3) if kind == "arcface" else true - 0.3
    assert torch.allclose(logits, 10.0 * expected, atol=1e-5)


def test_trained_folder_is_a_recognizer_for_the_analyzer(tmp_path, faces_dir, one_thread):
    """`idgen fr train` on a tiny ImageFolder writes a folder that `FaceAnalyzer.from_backend`
    (hence `idgen eval verify --recognizer`) loads, and its embeddings are the model's own."""
    pytest.importorskip("dlib")
    from idgen.cli import main
    from idgen.faces import FaceAnalyzer, align_face, load_image
    from idgen.fr import TorchRecognizer
    from idgen.fr.data import to_tensor

    photos = sorted(faces_dir.iterdir())
    for k, photo in enumerate(photos):
        (tmp_path / "data" / f"person{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / "data" / f"person{k % 2}" / photo.name)
    out = tmp_path / "model"
    assert main(["fr", "train", "--data", str(tmp_path / "data"), "--output", str(out), "--epochs", "1",
                 "--batch-size", "4", "--width", "0.25", "--input-size", "32", "--embedding-size", "16",
                 "--no-progress"]) == 0
    analyzer = FaceAnalyzer.from_backend("dlib", str(out))
    face = analyzer.get_face(photos[0])
    assert face.embedding.shape == (16,)
    model = TorchRecognizer(out).model
    with torch.no_grad():
        expected = model(to_tensor(align_face(load_image(photos[0]), face.landmarks, 32)[None]))[0]
    assert np.allclose(face.embedding, expected.numpy(), atol=1e-4)


def aligned_crops(lfw_dir: Path, files: list, cache: Path) -> list:
    """112×112 ArcFace-aligned crops (dlib landmarks; a central box where dlib finds no face, as
    for the README's LFW numbers), cached as PNG files under ``cache``."""
    from idgen.faces import FaceAnalyzer

    analyzer = None
    crops = []
    for name in files:
        path = cache / Path(name).with_suffix(".png")
        if not path.is_file():
            analyzer = analyzer or FaceAnalyzer.from_backend("dlib", None, fallback_box=0.42)
            face = analyzer.detect(lfw_dir / "images" / name)[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(face.aligned).save(path)
        crops.append(path)
    return crops


def lfw_file(name: str, number: int) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


@pytest.mark.slow
def test_training_on_lfw_dev_train_people_verifies_dev_test_pairs(lfw_dir, tmp_path, request):
    """LFW View 1: train on people of peopleDevTrain.txt only (≥ 8 photos each, at most 12), then
    the LFW protocol on all 1,000 pairsDevTest.txt pairs, whose people are disjoint from them."""
    pytest.importorskip("dlib")
    from idgen.eval import evaluate_scores, read_pairs
    from idgen.fr import TorchRecognizer, TrainConfig, train_recognizer
    from idgen.fr.data import centre_crop, to_tensor

    cache = Path(request.config.cache.mkdir("lfw-aligned-112"))
    people = [line.split() for line in (lfw_dir / "peopleDevTrain.txt").read_text().splitlines()[1:]]
    test_people = {line.split()[0] for line in (lfw_dir / "peopleDevTest.txt").read_text().splitlines()[1:]}
    train_files = [lfw_file(name, k) for name, count in people if int(count) >= 8
                   for k in range(1, min(int(count), 12) + 1)]
    assert not {f.split("/")[0] for f in train_files} & test_people
    data = tmp_path / "train"
    for crop, name in zip(aligned_crops(lfw_dir, train_files, cache), train_files):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, (data / name).with_suffix(".png"))

    config = TrainConfig(data=str(data), output=str(tmp_path / "model"), input_size=32, width=0.5, head="cosface",
                         scale=30.0, embedding_size=128, epochs=3, batch_size=64, progress=False)
    summary = train_recognizer(config)
    assert summary["final_loss"] < 0.7 * summary["first_loss"]

    pairs = read_pairs(lfw_dir / "pairsDevTest.txt", lfw_dir / "images")
    files = sorted({str(Path(p).relative_to(lfw_dir / "images")) for pair in pairs for p in (pair.first, pair.second)})
    crops = np.stack([centre_crop(np.asarray(Image.open(c)), 1.0, 32) for c in aligned_crops(lfw_dir, files, cache)])
    model = TorchRecognizer(tmp_path / "model").model
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(model(to_tensor(crops)) + model(to_tensor(crops[:, :, ::-1].copy())))
    index = {name: k for k, name in enumerate(files)}
    key = lambda p: index[str(Path(p).relative_to(lfw_dir / "images"))]  # noqa: E731
    scores = np.array([float(embeddings[key(p.first)] @ embeddings[key(p.second)]) for p in pairs])
    result = evaluate_scores(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    print(f"LFW View 1 DevTest accuracy {result['accuracy']:.4f} AUC {result['auc']:.4f} "
          f"({summary['classes']} people, {summary['images']} images)")
    assert result["accuracy"] >= 0.60
