"""The consistency filter on real LFW faces with the real MobileFaceNet recogniser."""

import numpy as np
import pytest
from PIL import Image

from idgen.synth.consistency import ConsistencyFilter

PEOPLE = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Jean_Chretien"]
THRESHOLD = 0.4


@pytest.fixture(scope="module")
def lfw_filter(lfw_dir, mobilefacenet_path):
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer

    analyzer = FaceAnalyzer.from_backend("dlib", f"mobilefacenet:{mobilefacenet_path}")
    return ConsistencyFilter(analyzer, threshold=THRESHOLD, reference="target", duplicate_cosine=0.97)


def photo(lfw_dir, name, number):
    return Image.open(lfw_dir / "images" / name / f"{name}_{number:04d}.jpg")


@pytest.mark.slow
def test_same_person_kept_other_people_rejected(lfw_dir, lfw_filter):
    for target_person in PEOPLE:
        target = lfw_filter.embed([photo(lfw_dir, target_person, 1)])[0]
        candidates = [(person, photo(lfw_dir, person, n)) for person in PEOPLE for n in (2, 3, 4)]
        embeddings = lfw_filter.embed([image for _, image in candidates])
        verdicts = lfw_filter.judge(embeddings, lfw_filter.reference_for(target, embeddings))
        for (person, _), verdict in zip(candidates, verdicts):
            assert verdict.kept == (person == target_person), (target_person, person, verdict.similarity)
            assert verdict.reason == ("kept" if person == target_person else "low_similarity")
            # the similarity is the cosine of the two recogniser embeddings, computed independently here
            assert verdict.similarity == pytest.approx(float(verdict.embedding @ target / np.linalg.norm(target)))


@pytest.mark.slow
def test_no_face_duplicates_and_centroid_reference(lfw_dir, lfw_filter):
    same = [photo(lfw_dir, "Colin_Powell", n) for n in (1, 2, 3)]
    blank = Image.new("RGB", (250, 250), (128, 128, 128))
    images = [same[0], blank, same[0], same[1], photo(lfw_dir, "Tony_Blair", 1), same[2]]
    embeddings = lfw_filter.embed(images)
    centroid_filter = ConsistencyFilter(lfw_filter.analyzer, THRESHOLD, reference="centroid", duplicate_cosine=0.97)
    reference = centroid_filter.reference_for(np.zeros(512), embeddings)  # 512-d target: not the recogniser's space
    reasons = [v.reason for v in centroid_filter.judge(embeddings, reference)]
    assert reasons == ["kept", "no_face", "duplicate", "kept", "low_similarity", "kept"]
    # the centroid ignores the off-identity face: it is the mean of the three Colin Powell embeddings
    expected = np.mean([embeddings[i] for i in (0, 2, 3, 5)], axis=0)
    assert reference == pytest.approx(expected / np.linalg.norm(expected), abs=1e-9)


def test_the_threshold_default_depends_on_the_generator_and_never_overrides_a_setting():
    """The mini model's renders sit far below 0.5 to their identity (benchmarks/filter_threshold.py),
    so it gets its own calibrated default; a threshold the user writes is kept, even one equal to
    another generator's default."""
    from idgen.synth import SynthConfig
    from idgen.synth.config import COMMON_DEFAULTS, GENERATOR_DEFAULTS, generator_defaults

    mini = GENERATOR_DEFAULTS["mini"]["filter.threshold"]
    assert mini < COMMON_DEFAULTS["filter.threshold"] == 0.5
    assert generator_defaults("mini")["filter.threshold"] == mini and generator_defaults(None)["filter.threshold"] == 0.5
    for generator, expected in (("mini", mini), ("arc2face", 0.5), ("photo", 0.5), ("my-registered-gen", 0.5)):
        assert SynthConfig.load(None, [f"generator.type={generator}"]).filter.threshold == expected
        assert SynthConfig.load(None, [f"generator.type={generator}", "filter.threshold=null"]).filter.threshold == expected
        for explicit in (0.3, 0.5):
            settings = [f"generator.type={generator}", f"filter.threshold={explicit}"]
            assert SynthConfig.load(None, settings).filter.threshold == explicit
    assert SynthConfig.from_dict({"generator": {"type": "mini"}, "filter": {"threshold": 0.5}}).filter.threshold == 0.5
    # the number is resolved into the config, so config.json records it and datasets made before the
    # per-generator default (threshold 0.5 written out) keep their fingerprint and still resume
    photo = ["generator.type=photo"]
    assert SynthConfig.load(None, photo).to_dict()["filter"]["threshold"] == 0.5
    assert SynthConfig.load(None, photo).fingerprint() == SynthConfig.load(None, [*photo, "filter.threshold=0.5"]).fingerprint()
    assert SynthConfig.load(None, ["generator.type=mini"]).fingerprint() != SynthConfig.load(
        None, ["generator.type=mini", "filter.threshold=0.5"]).fingerprint()


def test_the_mini_generator_alone_gets_its_identity_size_and_recogniser():
    """``generator.type=mini`` is a whole config: the identity length and the filter's recogniser
    follow the model (its own constants), a value the user writes is kept, and configs written out
    before these keys had per-generator defaults keep their fingerprint."""
    from idgen.pipelines.mini import MINI_FACE_BACKENDS, MINI_IDENTITY_DIM
    from idgen.synth import SynthConfig

    config = SynthConfig.load(None, ["generator.type=mini"])
    assert config.identities.dim == MINI_IDENTITY_DIM == 128
    assert config.filter.recognizer == MINI_FACE_BACKENDS["recognizer"] == "mobilefacenet"
    explicit = SynthConfig.load(None, ["generator.type=mini", "identities.dim=64", "filter.recognizer=dlib"])
    assert (explicit.identities.dim, explicit.filter.recognizer) == (64, "dlib")
    other = SynthConfig.load(None, ["generator.type=arc2face"])
    assert (other.identities.dim, other.filter.recognizer) == (512, "dlib")
    assert other.fingerprint() == SynthConfig.load(
        None, ["generator.type=arc2face", "identities.dim=512", "filter.recognizer=dlib"]).fingerprint()


def test_the_mini_generator_filter_sees_renders_as_the_mini_model_does():
    """64×64 renders are detected on an upscaled copy and embedded flip-summed, as the model was trained."""
    pytest.importorskip("dlib")
    from idgen.pipelines.mini import MINI_FACE_BACKENDS
    from idgen.synth import SynthConfig
    from idgen.synth.dataset import build_filter

    mini = build_filter(SynthConfig.load(None, ["generator.type=mini", "filter.recognizer=mobilefacenet"])).analyzer
    assert (mini.min_side, mini.flip) == (MINI_FACE_BACKENDS["min_side"], True)
    other = build_filter(SynthConfig.load(None, ["generator.type=photo", "filter.recognizer=mobilefacenet"])).analyzer
    assert (other.min_side, other.flip) == (0, False)


def test_the_mini_generator_refuses_a_filter_recogniser_whose_embeddings_it_was_not_conditioned_on():
    """dlib's embeddings are 128-d like the mini model's MobileFaceNet identities, so nothing else would
    catch the filter comparing the two; the error names the setting to change."""
    pytest.importorskip("dlib")
    from idgen.errors import ConfigError
    from idgen.synth import SynthConfig
    from idgen.synth.dataset import build_filter

    with pytest.raises(ConfigError, match="filter.recognizer: mobilefacenet"):
        build_filter(SynthConfig.load(None, ["generator.type=mini", "filter.recognizer=dlib"]))
    with pytest.raises(ConfigError, match="'dlib'"):
        build_filter(SynthConfig.load(None, ["generator.type=mini", "filter.recognizer=dlib", "filter.reference=target"]))
    # renders compared with each other (no identity vectors) and other generators are fine with dlib
    assert build_filter(SynthConfig.load(None, ["generator.type=mini", "filter.recognizer=dlib",
                                                "filter.reference=centroid"])).analyzer.flip
    build_filter(SynthConfig.load(None, ["generator.type=photo"]))


def test_a_filter_recogniser_other_than_the_published_generators_own_gets_a_warning(tmp_path):
    """InfiniteYou renders compared with their identity vectors need IR-SE50's embeddings: a dlib filter
    that compares with the targets gets a warning naming IR-SE50; one comparing renders with each other
    (reference centroid), or one that embeds with IR-SE50 itself, gets none."""
    import warnings

    import torch
    from tiny_models import TINY_IR_SE, ir_se_state_dict

    from idgen.synth import SynthConfig
    from idgen.synth.dataset import build_filter

    pytest.importorskip("dlib")
    base = ["generator.type=infiniteyou", "generator.path=ByteDance/InfiniteYou", "identities.dim=128"]
    with pytest.warns(UserWarning, match="generator type 'infiniteyou' was trained on the embeddings of "
                                         "recognition_arcface_ir_se50.pth .*filter.recognizer embeds with DlibRecognizer"):
        build_filter(SynthConfig.load(None, [*base, "filter.recognizer=dlib", "filter.reference=auto"]))
    weights = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(ir_se_state_dict(**TINY_IR_SE), weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_filter(SynthConfig.load(None, [*base, "filter.recognizer=dlib", "filter.reference=centroid"]))
        build_filter(SynthConfig.load(None, [*base, "identities.dim=512", f"filter.recognizer=ir_se50:{weights}",
                                             "filter.reference=target"]))


def test_max_abs_yaw_is_range_checked_and_rejects_only_turned_faces(dlib_analyzer, faces_dir):
    """Abdullah_Gul_0001 is turned about 28° to his right, Aaron_Peirsol_0003 about 5° (their
    ``Face.pose``, tests/test_face_pose.py): a 20° limit refuses the first as turned away and keeps
    the second; no limit (the default) keeps both. Out-of-range limits are refused by name."""
    from idgen.errors import ConfigError
    from idgen.synth import SynthConfig
    from idgen.synth.dataset import build_filter

    assert SynthConfig.load(None, []).filter.max_abs_yaw is None
    assert build_filter(SynthConfig.load(None, ["generator.type=photo", "filter.max_abs_yaw=20"])).max_abs_yaw == 20
    for value in ("-1", "91", "nan"):
        with pytest.raises(ConfigError, match=r"filter\.max_abs_yaw must be a number from 0 to 90"):
            SynthConfig.load(None, [f"filter.max_abs_yaw={value}"])

    images = [Image.open(faces_dir / name) for name in ("Abdullah_Gul_0001.jpg", "Aaron_Peirsol_0003.jpg")]
    target = np.ones(128)
    for limit, expected in ((20.0, ["turned_away", "kept"]), (None, ["kept", "kept"]), (30.0, ["kept", "kept"])):
        judge = ConsistencyFilter(dlib_analyzer, threshold=-1.0, reference="target", max_abs_yaw=limit)
        embeddings = judge.embed(images)
        verdicts = judge.judge(embeddings, judge.reference_for(target, embeddings))
        assert [v.reason for v in verdicts] == expected, limit
        assert [v.kept for v in verdicts] == [reason == "kept" for reason in expected]
