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
