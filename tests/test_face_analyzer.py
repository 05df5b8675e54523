"""Face analysis on real photos with real offline models (dlib from PyPI, MobileFaceNet ONNX)."""

import numpy as np
import pytest
from PIL import Image

from idgen.errors import ImageReadError, ModelFilesMissingError, MultipleFacesError, NoFaceError
from idgen.faces import FaceAnalyzer, InsightFaceDetector, cosine_similarity, load_image


@pytest.fixture(scope="module")
def mfn_analyzer(mobilefacenet_path):
    pytest.importorskip("dlib")
    return FaceAnalyzer.from_backend("dlib", f"mobilefacenet:{mobilefacenet_path}")


def _similarities(analyzer, faces_dir):
    same_a = analyzer.get_face(faces_dir / "Aaron_Peirsol_0001.jpg").normed_embedding
    same_b = analyzer.get_face(faces_dir / "Aaron_Peirsol_0002.jpg").normed_embedding
    other = analyzer.get_face(faces_dir / "Abdullah_Gul_0001.jpg").normed_embedding
    return float(same_a @ same_b), float(same_a @ other)


def test_face_fields(dlib_analyzer, faces_dir):
    face = dlib_analyzer.get_face(faces_dir / "Aaron_Peirsol_0001.jpg")
    x1, y1, x2, y2 = face.bbox
    assert 40 < x1 < x2 < 210 and 40 < y1 < y2 < 220  # LFW deep-funneled faces sit in the middle
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_left[1]
    assert mouth_left[0] < mouth_right[0]
    assert face.aligned.shape == (112, 112, 3) and face.aligned.dtype == np.uint8
    assert face.embedding.shape == (128,)
    assert np.isclose(np.linalg.norm(face.normed_embedding), 1.0)


def test_dlib_same_person_closer_than_different(dlib_analyzer, faces_dir):
    same, different = _similarities(dlib_analyzer, faces_dir)
    assert same > 0.9 and different < 0.85 and same - different > 0.1


def test_dlib_detection_with_mobilefacenet_recogniser(mfn_analyzer, faces_dir):
    same, different = _similarities(mfn_analyzer, faces_dir)
    assert same > 0.5 > different


def test_batched_path_equals_one_at_a_time(mfn_analyzer, faces_dir):
    files = sorted(faces_dir.glob("*.jpg"))
    batched = mfn_analyzer.analyze_many(files, batch_size=3, progress=False)
    for path, face in zip(files, batched):
        single = mfn_analyzer.get_face(path)
        assert np.allclose(face.embedding, single.embedding, atol=1e-4)
        assert np.allclose(face.bbox, single.bbox)


def test_analyze_many_can_report_why_an_image_gave_no_face(dlib_analyzer, faces_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    wall = np.full((200, 200, 3), 80, np.uint8)
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    results = dlib_analyzer.analyze_many([broken, wall, photo], on_missing="report", progress=False)
    assert isinstance(results[0], ImageReadError) and f"{broken}: not an image file" in str(results[0])
    assert isinstance(results[1], NoFaceError)
    assert np.allclose(results[2].embedding, dlib_analyzer.get_face(photo).embedding, atol=1e-5)
    assert dlib_analyzer.analyze_many([broken, wall], progress=False) == [None, None]  # the default: skip


def _two_faces(faces_dir):
    big = load_image(faces_dir / "Aaron_Peirsol_0001.jpg")
    small = np.asarray(Image.fromarray(load_image(faces_dir / "Abdullah_Gul_0001.jpg")).resize((200, 200)))
    canvas = np.full((250, 470, 3), 128, np.uint8)
    canvas[:, :250] = big
    canvas[25:225, 260:460] = small
    return canvas


def test_several_faces_largest_first_and_single_policy(dlib_analyzer, faces_dir):
    canvas = _two_faces(faces_dir)
    faces = dlib_analyzer.analyze(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area and faces[0].bbox[0] < 250 <= faces[1].bbox[0]
    assert np.allclose(dlib_analyzer.get_face(canvas).embedding, faces[0].embedding)
    with pytest.raises(MultipleFacesError, match="2 faces found"):
        dlib_analyzer.get_face(canvas, policy="single")


def test_no_face_error_names_file_and_suggests_det_size(dlib_analyzer, tmp_path):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(blank)
    with pytest.raises(NoFaceError, match=r"wall\.png.*det_size"):
        dlib_analyzer.get_face(blank)


def test_tiny_image_error_mentions_size(dlib_analyzer, tmp_path, faces_dir):
    tiny = tmp_path / "tiny.jpg"
    Image.open(faces_dir / "Aaron_Peirsol_0001.jpg").resize((24, 24)).save(tiny)
    with pytest.raises(NoFaceError, match=r"tiny\.jpg.*24×24 px"):
        dlib_analyzer.get_face(tiny)


def test_exif_rotated_photo_found_upright(dlib_analyzer, faces_dir, tmp_path):
    upright = Image.open(faces_dir / "Aaron_Peirsol_0001.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    reference = dlib_analyzer.get_face(upright)
    rotated = dlib_analyzer.get_face(path)
    assert np.abs(rotated.landmarks - reference.landmarks).max() < 6
    assert cosine_similarity(rotated.embedding, reference.embedding) > 0.97


def test_large_image_detected_on_downscaled_copy(faces_dir):
    pytest.importorskip("dlib")
    analyzer = FaceAnalyzer.from_backend("dlib", "dlib", max_side=800)
    photo = Image.open(faces_dir / "Aaron_Peirsol_0001.jpg")
    big = photo.resize((4000, 4000), Image.Resampling.BICUBIC)
    calls = []
    detect = analyzer.detector.detect
    analyzer.detector.detect = lambda image: calls.append(image.shape) or detect(image)
    face = analyzer.get_face(big)
    assert calls == [(800, 800, 3)]  # the detector never saw the 4000 px image
    reference = analyzer.get_face(photo)
    assert np.abs(face.landmarks / 16.0 - reference.landmarks).max() < 3  # mapped back to full size
    assert cosine_similarity(face.embedding, reference.embedding) > 0.95


def test_small_image_detected_on_upscaled_copy(faces_dir):
    pytest.importorskip("dlib")
    photo = Image.open(faces_dir / "Aaron_Peirsol_0001.jpg")
    small = photo.crop((60, 60, 190, 190)).resize((64, 64), Image.Resampling.LANCZOS)  # a 64² face, as rendered
    assert FaceAnalyzer.from_backend("dlib", "dlib").analyze(small) == []  # dlib's detector misses it
    analyzer = FaceAnalyzer.from_backend("dlib", "dlib", min_side=192)
    calls = []
    detect = analyzer.detector.detect
    analyzer.detector.detect = lambda image: calls.append(image.shape) or detect(image)
    face = analyzer.get_face(small)
    assert calls == [(192, 192, 3)]
    reference = FaceAnalyzer.from_backend("dlib", "dlib").get_face(photo)
    expected = (reference.landmarks - 60) * 64 / 130   # the photo's landmarks, in the small image
    assert np.abs(face.landmarks - expected).max() < 2.5   # mapped back to the 64 px image
    assert cosine_similarity(face.embedding, reference.embedding) > 0.8


def test_fallback_box_for_precropped_sets(tmp_path):
    pytest.importorskip("dlib")
    blank = np.full((250, 250, 3), 90, np.uint8)
    analyzer = FaceAnalyzer.from_backend("dlib", None, fallback_box=0.4)
    (face,) = analyzer.detect(blank)
    assert face.det_score == -1.0
    assert np.allclose(face.bbox, [75, 75, 175, 175])


def test_missing_insightface_files_named(tmp_path):
    with pytest.raises(ModelFilesMissingError) as error:
        InsightFaceDetector("antelopev2", root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx") in message
    assert "glintr100.onnx" in message and "antelopev2" in message


def test_arc2face_recogniser_file_named_when_missing(tmp_path):
    pack = tmp_path / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / "scrfd_10g_bnkps.onnx").write_bytes(b"")
    with pytest.raises(ModelFilesMissingError, match=r"arcface\.onnx.*FoivosPar/Arc2Face"):
        FaceAnalyzer.from_backend("antelopev2", "arcface.onnx", root=tmp_path)


def test_the_shipped_mobilefacenet_is_the_reference_model(mfn_analyzer, faces_dir):
    """``recognizer="mobilefacenet"`` loads the copy inside the package (no path needed, offline), and
    it embeds exactly like the reference file; flip test-time augmentation adds the mirrored crop."""
    import numpy as np

    from idgen.faces import FaceAnalyzer
    from idgen.faces.model_files import MOBILEFACENET_ONNX

    assert MOBILEFACENET_ONNX.is_file() and (MOBILEFACENET_ONNX.parent / "LICENSE.md").is_file()
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    shipped = FaceAnalyzer.from_backend("dlib", "mobilefacenet").get_face(photo).embedding
    np.testing.assert_array_equal(shipped, mfn_analyzer.get_face(photo).embedding)
    flipped = FaceAnalyzer.from_backend("dlib", "mobilefacenet", flip=True).get_face(photo).embedding
    assert not np.allclose(flipped, shipped) and np.allclose(np.linalg.norm(flipped), 2 * np.linalg.norm(shipped), rtol=0.2)


def test_a_file_that_is_not_a_usable_onnx_model_is_refused_naming_it(tmp_path, mobilefacenet_path):
    """``mobilefacenet:PATH`` (or any .onnx recogniser) that is text, cut short, or holds NaN weights:
    a DataError naming the file, not protobuf's traceback or NaN embeddings."""
    import re

    import onnx
    from hostile_files import cut_short
    from onnx import numpy_helper

    from idgen.errors import DataError

    (tmp_path / "notes.onnx").write_text("these are my notes, not a model")
    (tmp_path / "cut.onnx").write_bytes(mobilefacenet_path.read_bytes())
    cut_short(tmp_path / "cut.onnx")
    model = onnx.load(str(mobilefacenet_path))
    weight = next(w for w in model.graph.initializer if numpy_helper.to_array(w).dtype.kind == "f")
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    cases = {"notes.onnx": "not an ONNX model", "cut.onnx": "not an ONNX model",
             "nan.onnx": rf"NaN or infinite values in {re.escape(weight.name)}"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path / name))}: {message}.*exported as ONNX"):
            FaceAnalyzer.from_backend("dlib", f"mobilefacenet:{tmp_path / name}")


def test_an_insightface_detector_file_cut_short_is_refused_naming_it(tmp_path, mobilefacenet_path):
    from hostile_files import cut_short

    from idgen.errors import DataError

    pack = tmp_path / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / "scrfd_10g_bnkps.onnx").write_bytes(mobilefacenet_path.read_bytes())
    cut_short(pack / "scrfd_10g_bnkps.onnx")
    (pack / "glintr100.onnx").write_bytes(mobilefacenet_path.read_bytes())
    with pytest.raises(DataError, match=r"scrfd_10g_bnkps.onnx: not an ONNX model .*download the antelopev2 pack again"):
        InsightFaceDetector("antelopev2", root=tmp_path)
