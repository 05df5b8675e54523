"""The protected-identity guard: refusal, substitution, persistence, and use with the Arc2Face pipeline."""

from __future__ import annotations

import pytest
import torch
from tiny_sd import IMAGE_SIZE, TEXT_WIDTH, tiny_pipeline

from idgen.errors import ConfigError, IdgenError
from idgen.guard import IdentityGuard, ProtectedIdentityError, ProtectedIdentityWarning
from idgen.identity import perturb, random_identities

DIM = TEXT_WIDTH


@pytest.fixture
def people():
    ids = random_identities(5, DIM, generator=torch.Generator().manual_seed(0))
    return ids[:2], ids[2:]  # protected (alice, bob), others


def test_similarities_are_cosines(people):
    protected, others = people
    guard = IdentityGuard(protected * 3.0, names=["alice", "bob"])
    scaled = others * torch.tensor([[0.5], [2.0], [7.0]])
    expected = torch.nn.functional.cosine_similarity(others[:, None], protected[None], dim=-1)
    torch.testing.assert_close(guard.similarities(scaled), expected)


def test_refuses_protected_people_and_their_other_photos(people):
    protected, others = people
    guard = IdentityGuard(protected, threshold=0.4, names=["alice", "bob"])
    other_photo_of_bob = perturb(protected[1], 0.6, generator=torch.Generator().manual_seed(1))
    request = torch.stack([others[0], other_photo_of_bob])
    with pytest.raises(ProtectedIdentityError, match=r"identity 1 matches protected identity 'bob' \(cosine 0\.600") as error:
        guard.check(request)
    assert isinstance(error.value, IdgenError)
    # Below the threshold passes unchanged (as unit vectors).
    far = perturb(protected[0], 0.3, generator=torch.Generator().manual_seed(2))
    passed = guard.check(torch.stack([others[0] * 4, far]))
    torch.testing.assert_close(passed, torch.stack([others[0], far]))


def test_threshold_is_inclusive(people):
    protected, _ = people
    guard = IdentityGuard(protected, threshold=0.5)
    at_threshold = perturb(protected[0], 0.5 + 1e-4, generator=torch.Generator().manual_seed(3))
    assert [m.protected for m in guard.matches(at_threshold)] == [0]


def test_substitutes_with_a_warning(people):
    protected, others = people
    guard = IdentityGuard(protected, threshold=0.4, action="substitute", names=["alice", "bob"])
    request = torch.stack([protected[0], others[1], perturb(protected[1], 0.8)])
    with pytest.warns(ProtectedIdentityWarning, match="'alice'.*'bob'"):
        safe = guard.check(request)
    torch.testing.assert_close(safe[1], others[1])
    assert guard.similarities(safe).max() < 0.4
    torch.testing.assert_close(safe.norm(dim=1), torch.ones(3))


def test_save_and_load(people, tmp_path):
    protected, _ = people
    IdentityGuard(protected, threshold=0.35, action="substitute", names=["alice", "bob"]).save(tmp_path / "p.safetensors")
    loaded = IdentityGuard.load(tmp_path / "p.safetensors")
    torch.testing.assert_close(loaded.protected, protected)
    assert (loaded.names, loaded.threshold, loaded.action) == (["alice", "bob"], 0.35, "substitute")
    assert IdentityGuard.load(tmp_path / "p.safetensors", action="refuse").action == "refuse"
    with pytest.raises(ConfigError, match="does not exist"):
        IdentityGuard.load(tmp_path / "missing.safetensors")


def test_bad_settings(people):
    protected, _ = people
    with pytest.raises(ConfigError, match="action"):
        IdentityGuard(protected, action="blur")
    with pytest.raises(ConfigError, match="names"):
        IdentityGuard(protected, names=["only one"])
    with pytest.raises(ConfigError, match="dimensions"):
        IdentityGuard(protected).check(torch.randn(1, 64))


def test_guarded_arc2face_pipeline(people):
    protected, others = people
    pipe = tiny_pipeline()
    run = dict(num_inference_steps=1, height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="np")
    refusing = IdentityGuard(protected, names=["alice", "bob"]).wrap(pipe)
    with pytest.raises(ProtectedIdentityError, match="alice"):
        refusing(id_embeds=protected[:1], **run)
    out = refusing(id_embeds=others[:1], **run)
    assert out.images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    torch.testing.assert_close(out.id_embeds, others[:1])
    substituting = IdentityGuard(protected, action="substitute").wrap(pipe)
    with pytest.warns(ProtectedIdentityWarning):
        out = substituting(id_embeds=torch.stack([protected[1], others[0]]), **run)
    assert out.images.shape[0] == 2
    assert (out.id_embeds @ protected.T).max() < 0.4
    torch.testing.assert_close(out.id_embeds[1], others[0])
    assert substituting.text_encoder is pipe.text_encoder  # other attributes are the pipeline's


def test_a_damaged_protected_list_is_refused_naming_it(people, tmp_path):
    from hostile_files import cut_short, pickled_instead
    from safetensors.torch import save_file

    from idgen.errors import DataError

    protected, _ = people
    for name in ("cut.safetensors", "pickled.safetensors"):
        IdentityGuard(protected).save(tmp_path / name)
    cut_short(tmp_path / "cut.safetensors")
    pickled_instead(tmp_path / "pickled.safetensors")
    save_file({"vectors": protected.contiguous()}, str(tmp_path / "other.safetensors"))
    cases = {"cut.safetensors": "not a complete safetensors file", "pickled.safetensors": r"a pickle \(torch.save\)",
             "other.safetensors": "no 'identities' tensor"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=rf"{name}: {message}.*IdentityGuard.save\(\)"):
            IdentityGuard.load(tmp_path / name)
