"""GS-LoRA building blocks on tiny random models: losses vs independent computations, where LoRA
goes, trainable share, merging, prototypes, config checking, and a tiny end-to-end run."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from idgen.errors import ConfigError
from idgen.recognition import FaceRecognizer, FaceSet, model_config
from idgen.unlearn import (add_task_lora, class_prototypes, find_ffn_linears, forgetting_loss, group_lasso,
                           group_soft_threshold, gs_lora_task, lora_groups, merge_task_lora,
                           prototype_loss)
from idgen.unlearn.config import ForgetConfig, GroupSparseLoraConfig, RunConfig


def tiny(num_classes=6, depth=3):
    torch.manual_seed(0)
    return FaceRecognizer(model_config(None, resolution=16, patch_size=8, dim=32, depth=depth, heads=4,
                                       mlp_dim=64, embedding_dim=16, num_classes=num_classes)).eval()


def test_group_lasso_matches_independent_sum_of_norms():
    torch.manual_seed(1)
    groups = [[torch.randn(3, 4), torch.randn(5)], [torch.randn(2, 2)], [torch.zeros(3)]]
    expected = 0.0
    for group in groups:
        expected += math.sqrt(sum(float(x) ** 2 for t in group for x in t.flatten()))
    assert float(group_lasso(groups)) == pytest.approx(expected, rel=1e-5)


def test_group_lasso_gradient_is_finite_for_a_zero_group():
    a = torch.randn(4, requires_grad=True)
    zero = torch.zeros(4, requires_grad=True)   # LoRA B starts at zero
    group_lasso([[a], [zero]]).backward()
    assert torch.isfinite(zero.grad).all() and torch.isfinite(a.grad).all()


def test_group_soft_threshold_matches_independent_computation():
    torch.manual_seed(2)
    groups = [[torch.randn(3, 4), torch.randn(5)], [torch.full((2, 2), 0.1)], [torch.zeros(3)], [torch.randn(6)]]
    before = [[t.clone() for t in g] for g in groups]
    threshold = 0.5
    norms = group_soft_threshold(groups, threshold)
    for group, original, norm_after in zip(groups, before, norms):
        norm = math.sqrt(sum(float(x) ** 2 for t in original for x in t.flatten()))
        factor = max(0.0, 1 - threshold / norm) if norm else 0.0   # prox of threshold·||w||: shrink the norm
        for t, o in zip(group, original):
            assert torch.allclose(t, o * factor, atol=1e-6)
        assert norm_after == pytest.approx(max(0.0, norm - threshold), abs=1e-6)
    assert float(groups[1][0].abs().sum()) == 0.0 and float(groups[2][0].abs().sum()) == 0.0   # norm 0.2, 0
    assert all(float(t.abs().sum()) > 0 for t in groups[0])


def test_forgetting_loss_is_bounded_and_zero_past_the_bound():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1])
    ce = float(nn.functional.cross_entropy(logits, labels))
    assert float(forgetting_loss(logits, labels, bound=10.0)) == pytest.approx(10.0 - ce)
    assert float(forgetting_loss(logits, labels, bound=ce - 0.1)) == 0.0
    # once forgotten (true class far below), the loss is exactly zero and gives no gradient
    wrong = torch.tensor([[-50.0, 50.0, 0.0]], requires_grad=True)
    loss = forgetting_loss(wrong, torch.tensor([0]), bound=20.0)
    loss.backward()
    assert loss.item() == 0.0 and float(wrong.grad.abs().sum()) == 0.0


def test_ffn_linears_found_by_structure_only():
    model = tiny()
    found = find_ffn_linears(model)
    assert list(found) == ["blocks.0", "blocks.1", "blocks.2"]
    assert found["blocks.1"] == ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]

    class Renamed(nn.Module):   # other names, another attention class: still found
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.ModuleDict({
                "self_attention": nn.MultiheadAttention(8, 2),
                "up": nn.Linear(8, 16), "down": nn.Linear(16, 8)}) for _ in range(2))
            self.classifier = nn.Linear(8, 3)
    found = find_ffn_linears(Renamed())
    assert found == {"layers.0": ["layers.0.up", "layers.0.down"], "layers.1": ["layers.1.up", "layers.1.down"]}
    assert find_ffn_linears(tiny(), target_pattern=r"fc2$")["blocks.0"] == ["blocks.0.mlp.fc2"]
    with pytest.raises(ConfigError, match="target_pattern"):
        find_ffn_linears(nn.Sequential(nn.Linear(2, 2)))


def test_lora_only_on_ffn_linears_and_trainable_share():
    model = tiny()
    total = model.num_parameters()
    peft_model, blocks = add_task_lora(model, "t0", rank=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".mlp.fc" in n and ".lora_" in n for n in trainable)
    assert len(trainable) == 3 * 2 * 2   # 3 blocks × 2 linears × (A, B)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == 3 * 2 * 2 * (32 + 64)   # rank·(in + out) per linear
    for grouping, count in (("block", 3), ("lora", 6), ("matrix", 12)):
        groups = lora_groups(model, blocks, "t0", grouping)
        assert len(groups) == count
        assert sum(p.numel() for g in groups for p in g.parameters) == n_trainable
    assert 100 * n_trainable / total < 20


def test_merge_after_task_keeps_outputs_and_removes_adapters():
    model = tiny()
    x = torch.randn(4, 3, 16, 16)
    peft_model, blocks = add_task_lora(model, "t0", rank=2)
    with torch.no_grad():
        for g in lora_groups(model, blocks, "t0"):
            for p in g.parameters:
                p.add_(0.1 * torch.randn_like(p))
        with_lora = model.embed(x)
    merged = merge_task_lora(peft_model)
    assert merged is model
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert isinstance(merged.blocks[0].mlp.fc1, nn.Linear)
    assert torch.allclose(merged.embed(x), with_lora, atol=1e-5)
    # a second task gets its own fresh adapters on the merged model
    _, blocks2 = add_task_lora(merged, "t1", rank=2)
    assert all(float(layer.lora_B["t1"].weight.abs().sum()) == 0 for layer in
               (dict(merged.named_modules())[n] for names in blocks2.values() for n in names))


def test_a_named_weight_gets_its_own_lora_group_and_merges_to_base_plus_b_a():
    """``target_parameters=["head.weight"]``: the classifier head gets a LoRA (A: r×D, B: C×r) as one
    more group, whatever the grouping; merged, the head weight is exactly W + B·A and nothing but the
    FFN linears and the head changed. An unknown name is refused with the weights one could name."""
    model = tiny()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model, blocks = add_task_lora(model, "t0", rank=2, target_parameters=["head.weight"])
    for grouping, count in (("block", 3 + 1), ("matrix", 12 + 1)):
        groups = lora_groups(model, blocks, "t0", grouping, ["head.weight"])
        assert len(groups) == count and groups[-1].name == "head.weight"
        assert sum(p.numel() for g in groups for p in g.parameters) == \
            sum(p.numel() for p in model.parameters() if p.requires_grad) == 3 * 2 * 2 * (32 + 64) + 2 * (16 + 6)
    a, b = groups[-1].parameters
    assert a.shape == (2, 16) and b.shape == (6, 2)
    with torch.no_grad():
        for g in groups:
            for p in g.parameters:
                p.add_(0.1 * torch.randn_like(p))
        expected_head = base["head.weight"] + b @ a
        x = torch.randn(4, 3, 16, 16)
        with_lora = model(x)
    merged = merge_task_lora(peft_model)
    after = dict(merged.named_parameters())
    assert torch.allclose(after["head.weight"], expected_head, atol=1e-6)
    assert torch.allclose(merged(x), with_lora, atol=1e-4)
    changed = {n for n in base if not torch.equal(after[n], base[n])}
    assert changed == {"head.weight"} | {f"{n}.weight" for names in blocks.values() for n in names}
    with pytest.raises(ConfigError, match=r"no 2-D weight 'head.bias'.*'head.weight'"):
        add_task_lora(tiny(), "t0", rank=2, target_parameters=["head.bias"])


def test_class_prototypes_are_normalised_class_means():
    emb = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 2, 2])
    protos, present = class_prototypes(emb, labels, 4)
    mean0 = torch.tensor([0.5, 0.5])   # mean of (1, 0) and (0, 1)
    assert torch.allclose(protos[0], mean0 / mean0.norm())
    assert torch.allclose(protos[2], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert present.tolist() == [True, False, True, False]


def _toy_faces(num_classes=6, per_class=12, seed=0):
    """Separable synthetic 'faces': each class a fixed random pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 3, 16, 16, generator=g) * 255
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 3, 16, 16, generator=g) * 80
    images = (patterns[labels] + noise).clamp(0, 255).to(torch.uint8)
    return FaceSet(images, labels, [f"id{i}" for i in range(num_classes)])


def test_gs_lora_task_forgets_and_keeps_on_toy_data():
    from idgen.recognition import FaceTransformerRecipe, fit, predict

    data = _toy_faces()
    model = tiny()
    fit(model, data, FaceTransformerRecipe(epochs=6, batch_size=24, learning_rate=3e-3, warmup_epochs=1, augment=False),
                     progress=False)
    assert float((predict(model, data) == data.labels).float().mean()) > 0.95
    forget, retain = data.of_classes([0]), data.of_classes(range(1, 6))
    config = ForgetConfig(epochs=8, batch_size=24, forget_batch_size=8, learning_rate=1e-2, bound=20.0, augment=False,
                          prototype_weight=0.5, lora=GroupSparseLoraConfig(rank=2))
    edited, stats = gs_lora_task(model, forget, retain, config)
    pred = predict(edited, data)
    assert float((pred[data.labels == 0] == 0).float().mean()) == 0.0
    assert float((pred[data.labels != 0] == data.labels[data.labels != 0]).float().mean()) > 0.9
    assert stats["trainable_params"] == 3 * 2 * 2 * (32 + 64) and stats["num_groups"] == 3
    assert not any(p.requires_grad is False for p in edited.parameters())


def test_proximal_group_lasso_sets_whole_groups_exactly_to_zero():
    """With the proximal step, a large α zeroes every group exactly (the merged model is the base);
    the plain subgradient term with the same α leaves every group non-zero."""
    data = _toy_faces()
    model = tiny()   # untrained is fine: only where the LoRA weights end up matters here
    forget, retain = data.of_classes([0]), data.of_classes(range(1, 6))
    x = torch.randn(2, 3, 16, 16)
    reference = model.embed(x).detach()
    zero_tol = 1e-3
    for proximal, expect_zero in ((True, 3), (False, 0)):
        config = ForgetConfig(epochs=2, batch_size=24, forget_batch_size=8, learning_rate=1e-2, alpha=1000.0, warmup_epochs=1,
                              proximal=proximal, augment=False, lora=GroupSparseLoraConfig(rank=2, zero_tol=zero_tol))
        edited, stats = gs_lora_task(copy.deepcopy(model), forget, retain, config)
        zero = [name for name, norm in stats["group_norms"].items() if norm == 0.0]
        assert len(zero) == expect_zero and stats["nonzero_groups"] == 3 - expect_zero
        if proximal:
            assert torch.allclose(edited.embed(x), reference, atol=1e-6)


def test_config_rejects_unknown_keys_by_name(tmp_path):
    good = {"data": {"root": "x"}, "model": {"path": "m"}, "output_dir": "o"}
    assert RunConfig.from_dict(good).forget.lora.rank == 8
    with pytest.raises(ConfigError, match="forget.lora.rnak"):
        RunConfig.from_dict({**good, "forget": {"lora": {"rnak": 4}}})
    with pytest.raises(ConfigError, match="unknown config key epochs"):
        RunConfig.from_dict({**good, "epochs": 3})
    assert RunConfig.from_dict(good, ["baselines.finetune_learning_rate=1e-4"]).baselines.finetune_learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="forget.learning_rate must be a number"):
        RunConfig.from_dict(good, ["forget.learning_rate=fast"])
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: faces}\nmodel: {path: m}\noutput_dir: out\n")
    assert RunConfig.load(path).data.root == str(tmp_path / "faces")


def test_save_and_load_recognizer_roundtrip(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path, [f"id{i}" for i in range(6)])
    loaded = FaceRecognizer.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x)) and loaded.class_names[5] == "id5"


def _toy_run(tmp_path, num_classes: int, train_epochs: int) -> dict:
    """A synthetic face folder (6 images per person) and the data/model part of a run config."""
    from PIL import Image

    data = _toy_faces(num_classes=num_classes, per_class=6)
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        folder = tmp_path / "faces" / f"person{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return {
        "data": {"root": str(tmp_path / "faces"), "align": "resize", "resolution": 16, "test_fraction": 0.34},
        "model": {"path": str(tmp_path / "base"), "preset": None,
                  "overrides": {"patch_size": 8, "dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "embedding_dim": 16},
                  "train": {"epochs": train_epochs, "batch_size": 16, "learning_rate": 3e-3, "warmup_epochs": 1}},
    }


def test_run_forgetting_continual_few_shot_missing_classes(tmp_path):
    """Two GS-LoRA++ tasks on a synthetic face folder, 3 images per class, a quarter of the retained
    classes without any data: the report has every metric, the files are written."""
    from idgen.unlearn import run_forgetting

    config = {
        **_toy_run(tmp_path, num_classes=8, train_epochs=6),
        "method": "gs-lora++",
        "tasks": {"num_tasks": 2, "classes_per_task": 1, "seed": 3, "shots": 3, "missing_fraction": 0.25},
        "forget": {"epochs": 2, "batch_size": 16, "forget_batch_size": 4, "prototype_weight": 0.5,
                   "lora": {"rank": 2, "grouping": "lora"}},
        "baselines": {"methods": ["retrain"]},
        "output_dir": str(tmp_path / "out"),
    }
    report = run_forgetting(config)
    first, second = report["methods"]["gs-lora++"]
    assert (first["forget_images"], first["retain_images"]) == (3, 3 * 5)   # 7 retained, 2 missing
    assert first["missing_classes"] == 2 and second["missing_classes"] == 2
    assert first["acc_previously_forgotten"] is None and second["acc_previously_forgotten"] is not None
    assert first["num_groups"] == 2 * 2        # per-LoRA grouping: 2 blocks × 2 linears
    assert second["h_mean"] == pytest.approx(2 * second["drop"] * second["acc_r"] / (second["drop"] + second["acc_r"]))
    assert len(report["methods"]["retrain"]) == 2
    for name in ("report.json", "report.md", "groups.png", "model/model.safetensors", "model/config.json"):
        assert (tmp_path / "out" / name).is_file()
    # a second run loads the saved base model instead of training again
    assert run_forgetting({**config, "output_dir": str(tmp_path / "out2")})["base"]["trained"] is False


def test_a_saved_base_is_used_only_for_the_people_and_photos_it_was_trained_on(tmp_path):
    """model.path holds a recogniser trained on one face folder: the same folder loads it; people
    swapped for others (same count), or the same people with other photos, are refused by name
    instead of silently reusing a recogniser that classifies other people."""
    import shutil

    from PIL import Image

    from idgen.unlearn import run_forgetting

    config = {**_toy_run(tmp_path, num_classes=4, train_epochs=1), "baselines": {"methods": []}, "save_model": False,
              "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "lora": {"rank": 2}}}
    faces = tmp_path / "faces"
    assert run_forgetting({**config, "output_dir": str(tmp_path / "first")})["base"]["trained"] is True
    assert run_forgetting({**config, "output_dir": str(tmp_path / "again")})["base"]["trained"] is False

    swapped = tmp_path / "swapped"                     # person0 and person1 replaced by two other people
    shutil.copytree(faces, swapped)
    for old, new in (("person0", "alice"), ("person1", "bob")):
        (swapped / old).rename(swapped / new)
    with pytest.raises(ConfigError) as caught:
        run_forgetting({**config, "data": {**config["data"], "root": str(swapped)}, "output_dir": str(tmp_path / "s")})
    message = str(caught.value)
    assert "people not in it: ['alice', 'bob']" in message and "people only in it: ['person0', 'person1']" in message
    assert "point model.path at a new folder" in message

    repainted = tmp_path / "repainted"                 # the same people, one photo changed
    shutil.copytree(faces, repainted)
    photo = sorted((repainted / "person2").iterdir())[0]
    Image.fromarray(255 - np.asarray(Image.open(photo))).save(photo)
    with pytest.raises(ConfigError, match="was trained on other photos of these 4 people"):
        run_forgetting({**config, "data": {**config["data"], "root": str(repainted)}, "output_dir": str(tmp_path / "r")})


def test_hyperparameters_chosen_on_a_validation_split_of_training_images(tmp_path):
    """selection: the last training image of each person is held out of all training; each candidate
    (learning_rate, BND, and α for GS-LoRA) is scored on those images and the best one is the one used for the
    reported run."""
    from idgen.unlearn import run_forgetting

    config = {
        **_toy_run(tmp_path, num_classes=5, train_epochs=4),
        "tasks": {"num_tasks": 1, "classes_per_task": 1, "seed": 0},
        "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "lora": {"rank": 2}},
        "baselines": {"methods": ["finetune"]},
        "selection": {"val_per_class": 1, "gs_lora_learning_rates": [1e-4, 3e-2], "finetune_learning_rates": ["1e-5", 1e-3],
                      "bounds": [5, 40], "alphas": [0, 10]},
        "output_dir": str(tmp_path / "out"), "save_model": False,
    }
    report = run_forgetting(config)
    assert report["data"] == {"identities": 5, "train_images": 5 * 3, "test_images": 5 * 2, "validation_images": 5}
    grids = {"gs-lora": {(learning_rate, b, a) for learning_rate in (1e-4, 3e-2) for b in (5.0, 40.0) for a in (0.0, 10.0)},
             "finetune": {(learning_rate, b, None) for learning_rate in (1e-5, 1e-3) for b in (5.0, 40.0)}}   # no groups: no α
    for method, (section, lr_key, bound_key) in (("gs-lora", ("forget", "learning_rate", "bound")),
                                                 ("finetune", ("baselines", "finetune_learning_rate", "finetune_bound"))):
        candidates = report["selection"][method]["candidates"]
        assert {(c["learning_rate"], c["bound"], c.get("alpha")) for c in candidates} == grids[method]
        best = max(candidates, key=lambda c: c["val_h_mean"])
        assert report["selection"][method]["chosen"] == {k: v for k, v in best.items() if k != "val_h_mean"}
        assert report["config"][section][lr_key] == best["learning_rate"]
        assert report["config"][section][bound_key] == best["bound"]
    assert report["config"]["forget"]["alpha"] == max(report["selection"]["gs-lora"]["candidates"],
                                                      key=lambda c: c["val_h_mean"])["alpha"]
    assert "chosen on the validation split (5 training images held out)" in (tmp_path / "out" / "report.md").read_text()


def test_gs_lora_plus_plus_chooses_its_prototype_weight_on_validation_too(tmp_path):
    """GS-LoRA++'s grid crosses learning_rate, BND and α with the prototype weight γ; the best γ is the one
    the reported run uses. Plain GS-LoRA has no prototypes: a γ grid for it is refused by name."""
    from idgen.unlearn import run_forgetting

    config = {
        **_toy_run(tmp_path, num_classes=5, train_epochs=4), "method": "gs-lora++",
        "tasks": {"num_tasks": 1, "classes_per_task": 1, "seed": 0},
        "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "alpha": 10,
                   "lora": {"rank": 2}},
        "baselines": {"methods": []},
        "selection": {"val_per_class": 1, "gs_lora_learning_rates": [3e-2], "bounds": [5, 40], "prototype_weights": [0.1, 3]},
        "output_dir": str(tmp_path / "out"), "save_model": False,
    }
    report = run_forgetting(config)
    candidates = report["selection"]["gs-lora++"]["candidates"]
    assert [(c["learning_rate"], c["bound"], c["alpha"], c["prototype_weight"]) for c in candidates] == [
        (3e-2, b, 10.0, g) for b in (5.0, 40.0) for g in (0.1, 3.0)]
    best = max(candidates, key=lambda c: c["val_h_mean"])
    assert report["config"]["forget"]["prototype_weight"] == best["prototype_weight"]
    assert report["config"]["forget"]["bound"] == best["bound"]
    assert f"γ {best['prototype_weight']:g}" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ConfigError, match="selection.prototype_weights.*method: gs-lora\\+\\+"):
        run_forgetting({**config, "method": "gs-lora"})


def test_prototype_bound_defaults_to_the_forgetting_bound(monkeypatch):
    """Prototype logits have the head's scale, so unless ``prototype_bound`` is set, the push-away
    on them uses the same BND as the head's forgetting loss."""
    from idgen.unlearn import forget as forget_module

    seen = []

    def recording(*args, bound, **kwargs):
        seen.append(bound)
        return prototype_loss(*args, bound=bound, **kwargs)

    monkeypatch.setattr(forget_module, "prototype_loss", recording)
    data = _toy_faces()
    forget, retain = data.of_classes([0]), data.of_classes(range(1, 6))
    for prototype_bound, expected in ((None, 7.0), (3.0, 3.0)):
        seen.clear()
        config = ForgetConfig(epochs=1, batch_size=24, forget_batch_size=8, bound=7.0, prototype_weight=1.0,
                              prototype_bound=prototype_bound, augment=False, lora=GroupSparseLoraConfig(rank=2))
        gs_lora_task(tiny(), forget, retain, config)
        assert seen and set(seen) == {expected}


def test_a_configuration_gives_the_same_result_whatever_ran_before_it(tmp_path):
    """Selection runs many candidates before the reported run; the reported numbers must be those
    the chosen configuration gets on its own (same metrics, same edited weights). A run seeds the
    global generator for itself and leaves the caller's state as it found it."""
    import dataclasses

    from idgen.recognition import FaceTransformerRecipe, fit, predict
    from idgen.unlearn.forget import run_method

    data = _toy_faces(per_class=8)
    model = tiny()
    fit(model, data, FaceTransformerRecipe(epochs=2, batch_size=24, learning_rate=3e-3, warmup_epochs=0), progress=False)
    config = RunConfig.from_dict({**_toy_run(tmp_path, num_classes=6, train_epochs=1), "output_dir": str(tmp_path),
                          "tasks": {"num_tasks": 1, "classes_per_task": 1},
                          "forget": {"epochs": 1, "batch_size": 16, "forget_batch_size": 4, "lora": {"rank": 2}}})
    base_predictions = predict(model, data)

    def run(learning_rate):
        run_config = dataclasses.replace(config, forget=dataclasses.replace(config.forget, learning_rate=learning_rate))
        return run_method("gs-lora", model, data, data, [[0]], run_config, base_predictions)[-1]

    state = torch.get_rng_state()
    alone = run(1e-2)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)             # the global generator moves, as other candidates and methods move it
    run(3e-2)
    again = run(1e-2)
    assert again["h_mean"] == alone["h_mean"] and again["acc_r"] == alone["acc_r"]
    assert all(torch.equal(a, b) for a, b in zip(alone["model"].state_dict().values(),
                                                 again["model"].state_dict().values()))


def test_gallery_accuracy_is_nearest_class_mean_of_the_edited_models_embeddings(tmp_path):
    """gallery_acc_f / gallery_acc_r: test photos identified by the nearest class mean (cosine) of the
    training photos' embeddings, all embedded by the edited model; checked against a plain loop."""
    from idgen.recognition import FaceTransformerRecipe, fit, predict
    from idgen.recognition.data import to_model_input
    from idgen.unlearn.forget import run_method

    data = _toy_faces(per_class=8)
    train, test = data.hold_out(3)
    model = tiny()
    fit(model, train, FaceTransformerRecipe(epochs=3, batch_size=24, learning_rate=3e-3, warmup_epochs=0), progress=False)
    config = RunConfig.from_dict({**_toy_run(tmp_path, num_classes=6, train_epochs=1), "output_dir": str(tmp_path),
                          "tasks": {"num_tasks": 1, "classes_per_task": 2},
                          "forget": {"epochs": 2, "batch_size": 16, "forget_batch_size": 4, "learning_rate": 3e-2,
                                     "lora": {"rank": 2}}})
    result = run_method("gs-lora", model, train, test, [[0, 1]], config, predict(model, test))[-1]

    def by_loop(edited):
        with torch.no_grad():
            gallery = edited.eval().embed(to_model_input(train.images))
            queries = edited.embed(to_model_input(test.images))
        means = torch.stack([torch.nn.functional.normalize(gallery[train.labels == c], dim=1).mean(0) for c in range(6)])
        found = [max(range(6), key=lambda c: float(torch.nn.functional.cosine_similarity(q, means[c], dim=0)))
                 for q in queries]
        right = [f == int(label) for f, label in zip(found, test.labels)]
        forgotten = [r for r, label in zip(right, test.labels) if int(label) in (0, 1)]
        kept = [r for r, label in zip(right, test.labels) if int(label) not in (0, 1)]
        return 100 * sum(forgotten) / len(forgotten), 100 * sum(kept) / len(kept)

    assert (result["gallery_acc_f"], result["gallery_acc_r"]) == pytest.approx(by_loop(result["model"]), abs=1e-4)
    assert result["gallery_acc_f_before"] == pytest.approx(by_loop(model)[0], abs=1e-4)
    # selection skips the gallery (it scores the head's H-Mean only); nothing else changes
    skipped = run_method("gs-lora", model, train, test, [[0, 1]], config, predict(model, test), gallery_metrics=False)[-1]
    gallery_keys = ("gallery_acc_f_before", "gallery_acc_f", "gallery_acc_r")
    assert all(skipped[key] is None for key in gallery_keys)
    ignored = gallery_keys + ("model", "wall_seconds", "log")
    assert {k: v for k, v in skipped.items() if k not in ignored} == {k: v for k, v in result.items() if k not in ignored}


def test_repeats_report_the_mean_and_spread_of_single_seed_runs(tmp_path):
    """``repeats: 2``: every reported metric is the mean of two runs that each equal a run made on
    its own with that seed; the Markdown table shows mean ± standard deviation."""
    import statistics

    from idgen.unlearn import run_forgetting

    config = {
        **_toy_run(tmp_path, num_classes=5, train_epochs=10),
        "tasks": {"num_tasks": 2, "classes_per_task": 1, "seed": 1},
        "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "learning_rate": 1e-2,
                   "lora": {"rank": 2}},
        "baselines": {"methods": ["drop-classes"]}, "save_model": False, "seed": 4,
    }
    repeated = run_forgetting({**config, "repeats": 2, "output_dir": str(tmp_path / "both")})
    singles = [run_forgetting({**config, "seed": seed, "output_dir": str(tmp_path / f"seed{seed}")})
               for seed in (4, 5)]
    for t, row in enumerate(repeated["methods"]["gs-lora"]):
        own = [single["methods"]["gs-lora"][t] for single in singles]
        assert [r["seed"] for r in row["runs"]] == [4, 5]
        for key in ("acc_f", "acc_r", "h_mean"):
            assert [r[key] for r in row["runs"]] == [o[key] for o in own]
            assert row[key] == pytest.approx(statistics.mean(o[key] for o in own))
            assert row["spread"][key] == pytest.approx(statistics.stdev(o[key] for o in own))
        assert row["cumulative"]["h_mean"] == pytest.approx(statistics.mean(o["cumulative"]["h_mean"] for o in own))
    # drop-classes draws nothing at random: it runs once, its rows have no spread and are one seed's
    dropped = repeated["methods"]["drop-classes"]
    assert all("spread" not in row and "runs" not in row for row in dropped)
    assert _without_wall_times(dropped) == _without_wall_times(singles[0]["methods"]["drop-classes"])
    first, second = repeated["methods"]["gs-lora"]
    table = (tmp_path / "both" / "report.md").read_text()
    assert "mean over 2 training seeds" in table
    # the table gives mean ± std where the seeds differ, the bare number where they agree: task 1
    # starts from the base for every seed, task 2 from each seed's own task-1 model
    assert first["spread"]["acc_f_before"] == 0 and second["spread"]["acc_f_before"] > 0
    assert second["spread"]["h_mean"] > 0
    for row in (first, second):
        for key in ("acc_f_before", "h_mean"):
            spread = row["spread"][key]
            shown = f"{row[key]:.2f} ± {spread:.2f}" if spread else f"{row[key]:.2f}"
            assert f"| {shown} |" in table


def test_drop_classes_baseline_only_takes_forgotten_classes_out_of_the_heads_arg_max(tmp_path):
    """``drop-classes``: no training; after each task the test photos get the base model's best
    class among those not forgotten so far (checked against numpy on the base's logits), so the head
    never names a forgotten person while the embeddings, and the gallery metric, stay the base's."""
    from idgen.recognition import FaceTransformerRecipe, fit, predict
    from idgen.recognition.data import to_model_input
    from idgen.unlearn.forget import run_method

    data = _toy_faces(per_class=8)
    train, test = data.hold_out(3)
    model = tiny()
    fit(model, train, FaceTransformerRecipe(epochs=3, batch_size=24, learning_rate=3e-3, warmup_epochs=0), progress=False)
    config = RunConfig.from_dict({**_toy_run(tmp_path, num_classes=6, train_epochs=1), "output_dir": str(tmp_path)})
    tasks = [[0, 1], [4]]
    results = run_method("drop-classes", model, train, test, tasks, config, predict(model, test))
    with torch.no_grad():
        logits = model.eval()(to_model_input(test.images)).numpy()
    labels = test.labels.numpy()
    for result, gone in zip(results, ([0, 1], [0, 1, 4])):
        kept_columns = [c for c in range(6) if c not in gone]
        found = np.array(kept_columns)[logits[:, kept_columns].argmax(1)]
        retained = ~np.isin(labels, gone)
        assert result["acc_r"] == pytest.approx(100 * (found[retained] == labels[retained]).mean())
        assert result["cumulative"]["acc_f"] == 0.0 and result["trainable_share"] == 0.0
        assert result["gallery_acc_f"] == result["gallery_acc_f_before"]   # the embedding is untouched
    assert results[1]["acc_previously_forgotten"] == 0.0
    edited = results[-1]["model"].state_dict()
    assert all(torch.equal(edited[name], weight) for name, weight in model.state_dict().items())
    with pytest.raises(ConfigError, match=r"baselines.methods: unknown \['fine-tune'\]"):
        from idgen.unlearn import run_forgetting
        run_forgetting({**_toy_run(tmp_path, num_classes=6, train_epochs=1), "output_dir": str(tmp_path),
                        "baselines": {"methods": ["fine-tune"]}})


def test_seeds_that_agree_have_exactly_zero_spread():
    """Three equal values have no spread (a bare number in report.md), not the 8.7e-15 that float
    rounding in the mean leaves; different values get the sample standard deviation."""
    import statistics

    from idgen.unlearn.forget import _mean_and_spread

    value = 53.93442622950819   # the LFW-62 ideal H-Mean: rounding makes torch's std 8.7e-15 here
    assert _mean_and_spread([value] * 3) == (pytest.approx(value), 0.0)
    assert _mean_and_spread([1.0, 2.0, 4.0])[1] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))


class _Killed(Exception):
    """Stands in for the process being killed in the middle of a forgetting run."""


def _without_wall_times(value):
    """``value`` with every ``wall_seconds`` dropped (the only numbers that differ between runs)."""
    if isinstance(value, dict):
        return {k: _without_wall_times(v) for k, v in value.items() if k != "wall_seconds"}
    if isinstance(value, list):
        return [_without_wall_times(v) for v in value]
    return value


def test_a_killed_run_resumes_and_reports_what_an_uninterrupted_run_reports(tmp_path, monkeypatch):
    """Selection (3 candidates) and the reported runs of 3 methods, 2 seeds each (drop-classes
    once: it draws nothing at random), are 11 runs. Killed in the 9th, the run leaves 8 in output_dir/journal (only the reported GS-LoRA run's first seed
    with its model); the same call then runs only the 3 missing ones, and its report and saved model are those of a
    run that was never interrupted. The journal is gone afterwards."""
    import json

    from safetensors.torch import load_file

    from idgen.unlearn import forget as forget_module
    from idgen.unlearn import run_forgetting

    config = {
        **_toy_run(tmp_path, num_classes=5, train_epochs=3),
        "tasks": {"num_tasks": 2, "classes_per_task": 1, "seed": 0},
        "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "lora": {"rank": 2}},
        "baselines": {"methods": ["finetune", "drop-classes"]},
        "selection": {"val_per_class": 1, "gs_lora_learning_rates": [1e-3, 3e-2], "finetune_learning_rates": [1e-3]},
        "repeats": 2,
    }
    uninterrupted = run_forgetting({**config, "output_dir": str(tmp_path / "whole")})   # trains the base too

    real_run_method, calls = forget_module.run_method, []

    def run_method(method, *args, **kwargs):
        calls.append(method)
        if kill_at is not None and len(calls) == kill_at:
            raise _Killed
        return real_run_method(method, *args, **kwargs)

    monkeypatch.setattr(forget_module, "run_method", run_method)
    out = tmp_path / "resumed"
    kill_at = 9
    with pytest.raises(_Killed):
        run_forgetting({**config, "output_dir": str(out)})
    assert calls == ["gs-lora"] * 4 + ["finetune"] * 2 + ["gs-lora"] * 2 + ["finetune"]   # selection, reported
    assert len(list((out / "journal").glob("*.json"))) == 8
    assert len(list((out / "journal").glob("*.safetensors"))) == 1
    assert not (out / "report.json").exists()

    calls.clear()
    kill_at = None
    resumed = run_forgetting({**config, "output_dir": str(out)})
    assert calls == ["finetune"] * 2 + ["drop-classes"]
    for key in ("selection", "methods", "config"):
        expected, got = _without_wall_times(uninterrupted[key]), _without_wall_times(resumed[key])
        if key == "config":
            expected["output_dir"] = got["output_dir"]
        assert got == expected, key
    # the run's own JSON round trip is exact too
    assert _without_wall_times(json.loads((out / "report.json").read_text())["methods"]) == \
        _without_wall_times(json.loads((tmp_path / "whole" / "report.json").read_text())["methods"])
    saved, expected = load_file(str(out / "model" / "model.safetensors")), \
        load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
    assert not (out / "journal").exists()


def test_output_dir_is_refused_unless_new_empty_or_an_earlier_runs(tmp_path, monkeypatch):
    """A folder of someone else's files is refused, naming it, before any photo is read, and left as
    it was. A rerun into its own folder clears a killed write's temporary file, replaces the report,
    removes the earlier model it no longer saves (``save_model: false``) and keeps a file someone added."""
    from idgen.errors import OutputError
    from idgen.unlearn import forget as forget_module
    from idgen.unlearn import run_forgetting

    config = {**_toy_run(tmp_path, num_classes=5, train_epochs=1), "tasks": {"num_tasks": 1, "classes_per_task": 1},
              "forget": {"epochs": 1, "batch_size": 8, "forget_batch_size": 2, "warmup_epochs": 0, "lora": {"rank": 2}},
              "baselines": {"methods": []}}
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.md").write_text("their notes")
    with monkeypatch.context() as patched:
        patched.setattr(forget_module, "load_face_folder", lambda *a: pytest.fail("read photos before the check"))
        with pytest.raises(OutputError, match=f"{theirs} is not empty and holds no earlier output of this command "
                                              r"\(it holds 'report.md'\); give output_dir a new or empty folder"):
            run_forgetting({**config, "output_dir": str(theirs)})
    assert [p.name for p in theirs.iterdir()] == ["report.md"] and (theirs / "report.md").read_text() == "their notes"

    out = tmp_path / "out"
    run_forgetting({**config, "output_dir": str(out)})
    assert (out / "model" / "model.safetensors").is_file()
    (out / "notes.txt").write_text("mine")
    (out / ".report.json.a1b2c3d4.tmp").write_text('{"half')
    report = run_forgetting({**config, "output_dir": str(out), "save_model": False})
    assert sorted(p.name for p in out.iterdir()) == ["groups.png", "notes.txt", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["config"]["save_model"] is report["config"]["save_model"] is False


def test_the_base_model_section_is_the_face_transformers_fitting_options():
    """`model.train` is the Face Transformer's recipe, fitting options only."""
    from idgen.recognition import FaceTransformerRecipe

    base = {"data": {"root": "faces"}, "model": {"path": "m", "train": {"epochs": 3, "warmup_epochs": 1}},
            "output_dir": "out"}
    train = RunConfig.from_dict(base).model.train
    assert train == FaceTransformerRecipe(epochs=3, warmup_epochs=1)
    assert RunConfig.from_dict({**base, "model": {"path": "m"}}).model.train == FaceTransformerRecipe()
    with pytest.raises(ConfigError, match="model.train: data, head not an option of training the base model"):
        RunConfig.from_dict({**base, "model": {"path": "m", "train": {"head": "arcface", "data": "x"}}})
    with pytest.raises(ConfigError, match="model.train: architecture not an option of training the base model"):
        RunConfig.from_dict({**base, "model": {"path": "m", "train": {"architecture": "iresnet"}}})
