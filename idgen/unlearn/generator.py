"""Forgetting identities in an Arc2Face-style generator with GS-LoRA on its identity text encoder.

An Arc2Face pipeline sees a person only through ``encode_identity``: the identity vector replaces
the input embedding of the word ``id`` and the CLIP text encoder turns the prompt into the UNet's
conditioning. Editing that encoder is therefore enough to make the generator forget someone, and
it is cheap: no image is rendered during training. :func:`forget_identities` adds a LoRA to the FFN
linears of every encoder block (found by structure, as for the recogniser) and trains it so that

* the conditioning of each forgotten identity ``f``, and of vectors within a cosine ``radius`` of it
  (other photos of the same person; sampled fresh every step with :func:`idgen.identity.perturb`),
  becomes what the frozen encoder gives for the same vector with ``f`` swapped for a *neutral*
  identity ``n`` (:func:`swap_identity`): ``f`` itself turns into ``n``, a nearby ``c·f + s·w``
  into ``c·n + s·w``. A fixed target keeps the edit from running off to arbitrary, damaging
  extremes (the role the bound plays in GS-LoRA's forgetting loss); swapping only the ``f``
  component, instead of pulling every nearby vector onto ``n`` itself, asks for a change of low
  rank, which a LoRA can make with less collateral change than pulling all of the cap onto one point;
* the conditioning of every other identity — the retained ones given by the caller plus fresh
  random identities every step — and of the empty prompt (the negative conditioning of
  classifier-free guidance) stays what it was. Distances are to the frozen encoder's output, in
  units of a typical identity's distance from the neutral one, so ``beta`` weighs like against
  like. The forgetting term averages *squared* distances, the retention term plain distances: a
  squared retention penalty has a vanishing gradient for small drifts, so it tolerates a small
  change of every identity (mostly one shift shared by all of them) as the price of forgetting
  better; the plain distance, like the ``*_change`` metrics, keeps pushing each drift to zero;
* the group lasso over per-block LoRA groups, switched on after a warm-up, drives whole blocks'
  LoRAs to zero so the edit stays small and local.

Continual requests: each request trains its own LoRA on top of the encoder as earlier requests
left it and is **fused into the text encoder when its training ends** (like the recogniser's
per-task merge). Each request's LoRA is also saved in diffusers format; because LoRA deltas add,
loading every saved request into a fresh pipeline as its own named adapter (all active) gives the
same encoder as fusing them one after the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from ..config import SEED, Range, check_ranges, ranged
from ..errors import ConfigError
from ..identity import normalize, perturb, random_identities
from ..io import LORA_WEIGHT_NAME, atomic_path, save_safetensors_atomic, write_json_atomic
from .lora import GROUPINGS, find_ffn_linears, lora_groups
from .losses import group_lasso

REPORT_NAME = "forgetting.json"
PLOT_NAME = "to_neutral.png"
#: Cosine between two photos of one person for :func:`same_person_yardstick` (a close re-photograph).
SAME_PERSON_COSINE = 0.9


@dataclass
class GeneratorForgetConfig:
    """Settings of one forgetting request. The defaults are the ones ``benchmarks/generator_forgetting.py
    --steps 300`` chose on the tiny test encoder (docs/results.md, "Forgetting in the generator")."""

    rank: int = ranged(4, Range(1, 1024))   # LoRA rank; alpha = rank, so the saved weights need no metadata
    steps: int = ranged(300, Range(1))
    learning_rate: float = ranged(1e-2, Range(above=0))
    radius: float = ranged(0.5, Range(above=-1, below=1))   # forget every vector with cosine >= radius to a forgotten identity
    #: perturbed copies of each forgotten identity per step (each step encodes them all at once, hence the caps)
    nearby_per_identity: int = ranged(8, Range(1, 1024))
    random_per_step: int = ranged(32, Range(1, 4096))   # fresh random identities per step in the retention term
    beta: float = ranged(0.5, Range(0))     # weight of the forgetting term
    alpha: float = ranged(1e-3, Range(0))   # weight of the group lasso
    warmup_steps: int = ranged(150, Range(0))   # steps with alpha = 0
    grouping: str = "block"         # group-lasso groups: "block", "lora" or "matrix"
    seed: int = ranged(0, SEED)

    def __post_init__(self):
        check_ranges(self)
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"grouping must be one of {GROUPINGS}, not {self.grouping!r}")


@dataclass
class GeneratorForgetResult:
    """What one request did: its LoRA (diffusers keys), metrics, and which groups stayed non-zero."""

    adapter_name: str
    identities: torch.Tensor
    neutral: torch.Tensor
    lora_state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    group_norms: dict[str, float]
    config: GeneratorForgetConfig
    to_neutral: dict[str, list[float]] = field(default_factory=dict)  # per held-out vector, per set
    log: list[dict] = field(default_factory=list)

    def save(self, folder) -> Path:
        """Write the LoRA as ``pytorch_lora_weights.safetensors`` (what ``pipe.load_lora_weights(folder)``
        reads), a JSON report and the ``to_neutral`` histogram (:func:`plot_to_neutral`), atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic(self.lora_state_dict, folder / LORA_WEIGHT_NAME, metadata={"format": "pt"})
        write_json_atomic(folder / REPORT_NAME, {
            "adapter_name": self.adapter_name, "metrics": self.metrics, "group_norms": self.group_norms,
            "config": dataclasses.asdict(self.config), "num_identities": int(self.identities.shape[0]),
            "to_neutral": self.to_neutral,
        })
        if self.to_neutral:
            plot_to_neutral(self.to_neutral, folder / PLOT_NAME)
        return folder


# ---------------------------------------------------------------------------- conditioning
def _empty_prompt_tokens(pipe) -> torch.Tensor:
    return pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)


def _conditioning(pipe, identities: torch.Tensor) -> torch.Tensor:
    """Identity conditioning plus, as the last row, the empty prompt's (negative) conditioning."""
    device = pipe.text_encoder.device
    ids = pipe.encode_identity(identities, device=device)
    empty = pipe.text_encoder(_empty_prompt_tokens(pipe))[0]
    return torch.cat([ids, empty.to(ids.dtype)]).float()


def _relative_distance(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-row ``||a − b|| / scale`` over all tokens and channels."""
    return (a - b).flatten(1).norm(dim=1) / scale.clamp(min=1e-8)


@torch.no_grad()
def same_person_yardstick(pipe, identities: torch.Tensor, neutral_reference: torch.Tensor, *,
                          cosine: float = SAME_PERSON_COSINE, generator: Optional[torch.Generator] = None) -> float:
    """How far the conditioning moves when the *input* moves to another photo of the same person.

    Mean ``||c(v') − c(v)|| / ||c(v) − c(n)||`` over ``identities`` ``v``, with ``v'`` a random vector
    at ``cosine`` to ``v`` (:func:`~idgen.identity.perturb`), on the encoder as it is now (call it
    before the edit). A retained identity whose conditioning the edit moves by less than this is
    indistinguishable from the same person photographed again: the yardstick for "within a small
    tolerance" (``*_change`` metrics are in the same units).
    """
    before = _conditioning(pipe, identities)[:-1]
    other_photo = _conditioning(pipe, perturb(identities, cosine, generator=generator))[:-1]
    scale = (before.flatten(1) - neutral_reference.flatten(1)).norm(dim=1)
    return float(_relative_distance(other_photo, before, scale).mean())


@torch.no_grad()
def conditioning_metrics(pipe, reference: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         neutral_reference: torch.Tensor, yardstick: Optional[float] = None,
                         ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Compare the pipeline's conditioning now with ``reference``: ``{set name: (identities,
    their conditioning before the edit)}``, as built by :func:`_conditioning`.

    Distances are in units of how far each identity's original conditioning was from the neutral
    identity's, ``||c(v) − c(n)||``, so they mean the same for any encoder width:

    * ``{name}_to_neutral``: mean ``||c'(v) − c(n)|| / ||c(v) − c(n)||`` — 1 untouched, 0 fully
      replaced by the neutral identity (what forgotten identities should reach);
    * ``{name}_change`` (mean) and ``{name}_change_max``: ``||c'(v) − c(v)|| / ||c(v) − c(n)||`` —
      0 untouched (what retained identities should keep);
    * ``empty_prompt_change``: relative change of the negative (empty-prompt) conditioning;
    * ``same_person_yardstick``: ``yardstick`` when given (:func:`same_person_yardstick` on the
      unedited encoder), the tolerance ``*_change`` of other identities should stay below.

    Returns the metrics and, per set, every vector's ``to_neutral`` (for :func:`plot_to_neutral`).
    """
    metrics, to_neutral = {}, {}
    for name, (ids, before) in reference.items():
        after = _conditioning(pipe, ids)
        scale = (before[:-1] - neutral_reference).flatten(1).norm(dim=1)
        to_neutral[name] = _relative_distance(after[:-1], neutral_reference, scale).tolist()
        metrics[f"{name}_to_neutral"] = sum(to_neutral[name]) / len(to_neutral[name])
        change = _relative_distance(after[:-1], before[:-1], scale)
        metrics[f"{name}_change"] = float(change.mean())
        metrics[f"{name}_change_max"] = float(change.max())
    empty_before, empty_after = before[-1:], after[-1:]
    metrics["empty_prompt_change"] = float(_relative_distance(empty_after, empty_before,
                                                              empty_before.flatten(1).norm(dim=1)))
    if yardstick is not None:
        metrics["same_person_yardstick"] = yardstick
    return metrics, to_neutral


def plot_to_neutral(to_neutral: dict[str, list[float]], target: Path) -> None:
    """Histogram of ``to_neutral`` per held-out set: forgotten people (and their nearby vectors) should
    sit near 0, everyone else near 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bins = [i / 40 for i in range(61)]  # 0 … 1.5
    for name, values in to_neutral.items():
        ax.hist(values, bins=bins, density=True, alpha=0.55, label=f"{name} ({len(values)})")
    ax.axvline(1.0, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel("||c'(v) − c(neutral)|| / ||c(v) − c(neutral)||   (1: untouched, 0: neutral)")
    ax.set_ylabel("density")
    ax.set_title("conditioning after forgetting, held-out vectors", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------- LoRA plumbing
def _ffn_targets(text_encoder) -> dict[str, list[str]]:
    """Block → FFN linear names, seen through any peft layers already wrapping them."""
    blocks = find_ffn_linears(text_encoder)
    return {block: sorted({n.removesuffix(".base_layer") for n in names if ".lora_" not in n})
            for block, names in blocks.items()}


def _lora_layers(text_encoder, adapter_name: str):
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in text_encoder.named_modules()
            if isinstance(module, LoraLayer) and adapter_name in module.lora_A]


def _adapter_state_dict(text_encoder, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights under the keys diffusers' ``load_lora_weights`` reads for a text encoder."""
    state = {}
    for name, layer in _lora_layers(text_encoder, adapter_name):
        for matrix, direction in (("lora_A", "down"), ("lora_B", "up")):
            weight = getattr(layer, matrix)[adapter_name].weight
            key = f"text_encoder.{name}.lora_linear_layer.{direction}.weight"
            state[key] = weight.detach().to("cpu", torch.float32).contiguous()
    return state


@torch.no_grad()
def _fuse_and_remove(text_encoder, adapter_name: str) -> None:
    """Add the adapter's delta to the base weights, delete it, and unwrap peft layers when none remain."""
    from diffusers.utils import recurse_remove_peft_layers

    for _, layer in _lora_layers(text_encoder, adapter_name):
        base = layer.get_base_layer()
        base.weight += layer.get_delta_weight(adapter_name).to(base.weight.dtype)
    text_encoder.delete_adapter(adapter_name)
    if not getattr(text_encoder, "_hf_peft_config_loaded", False):
        recurse_remove_peft_layers(text_encoder)


def _next_adapter_name(text_encoder) -> str:
    count = getattr(text_encoder, "_idgen_forget_requests", 0) + 1
    text_encoder._idgen_forget_requests = count
    return f"forget_{count}"


# ---------------------------------------------------------------------------- the request
def swap_identity(vectors: torch.Tensor, forgotten: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """Each vector with its component along its forgotten identity moved onto the neutral identity.

    ``v = c·f + s·w`` (``f`` the forgotten identity, ``w ⟂ f``) becomes ``normalize(c·n + s·w)``:
    the forgotten identity itself becomes exactly the neutral one, another photo of the person
    becomes the neutral person with the same photo-specific deviation ``w``.
    """
    along = (vectors * forgotten).sum(-1, keepdim=True)
    return normalize(vectors + along * (neutral - forgotten))


def _as_identities(vectors, dim: int, what: str) -> torch.Tensor:
    ids = torch.as_tensor(vectors, dtype=torch.float32).cpu()
    ids = ids.reshape(-1, ids.shape[-1]) if ids.numel() else ids.reshape(0, dim)
    if ids.shape[-1] != dim:
        raise ConfigError(f"{what} have {ids.shape[-1]} dimensions, the forgotten identities {dim}")
    return normalize(ids) if ids.numel() else ids


def forget_identities(pipe, identities, *, retain=None, neutral=None,
                      config: Optional[GeneratorForgetConfig] = None, save_dir=None,
                      show_progress: bool = True, **overrides) -> GeneratorForgetResult:
    """Make ``pipe`` (an :class:`~idgen.pipelines.Arc2FacePipeline`) forget ``identities``.

    Args:
        identities: ``K×D`` (or ``D``) embeddings of the people to forget, e.g. from
            ``pipe.embed_faces(photos)``; any scale.
        retain: ``M×D`` embeddings that must keep their conditioning exactly (people who look alike,
            people forgotten by earlier requests if they should stay pinned, …). Fresh random
            identities are always retained as well.
        neutral: the identity forgotten people turn into. Default: a random identity drawn from
            ``config.seed``. What stays of a forgotten person is how much this identity's renders
            resemble them: on the embedded mini model the mean of its training embeddings (the
            "nobody in particular" face) resembled one group of people more than a typical other
            person does (``benchmarks/mini_forgetting.py``, docs: Results).
        config / overrides: :class:`GeneratorForgetConfig`, or its fields as keyword arguments.
        save_dir: if given, the LoRA and a JSON report are written there (see
            :meth:`GeneratorForgetResult.save`).

    Returns:
        :class:`GeneratorForgetResult`. The LoRA is already fused into ``pipe.text_encoder``.
    """
    config = dataclasses.replace(config or GeneratorForgetConfig(), **overrides)
    text_encoder = pipe.text_encoder
    forget = _as_identities(identities, torch.as_tensor(identities).shape[-1], "forgotten identities")
    dim = forget.shape[-1]
    retain = _as_identities(retain if retain is not None else torch.empty(0, dim), dim, "retained identities")
    generator = torch.Generator().manual_seed(config.seed)
    neutral = _as_identities(neutral if neutral is not None else random_identities(1, dim, generator=generator),
                             dim, "the neutral identity")[:1]

    # Held-out sets measured before and after: the forgotten identities, unseen vectors at the
    # radius around them, the retained identities and unseen random identities.
    eval_generator = torch.Generator().manual_seed(config.seed + 1)
    eval_sets = {"forgotten": forget,
                 "nearby": perturb(forget.repeat_interleave(8, 0),
                                   torch.empty(8 * len(forget)).uniform_(config.radius, 1.0, generator=eval_generator),
                                   generator=eval_generator),
                 "random": random_identities(64, dim, generator=eval_generator)}
    if len(retain):
        eval_sets["retained"] = retain
    with torch.no_grad():
        reference = {name: (ids, _conditioning(pipe, ids)) for name, ids in eval_sets.items()}
        neutral_target = _conditioning(pipe, neutral)[:1]
        yardstick = same_person_yardstick(pipe, eval_sets["random"], neutral_target, generator=eval_generator)
        # Squared distance of a typical identity from the neutral one: the unit of both loss terms.
        scale = (reference["random"][1][:-1] - neutral_target).flatten(1).pow(2).sum(1).mean()

    from peft import LoraConfig

    blocks = _ffn_targets(text_encoder)
    adapter_name = _next_adapter_name(text_encoder)
    targets = [name for names in blocks.values() for name in names]
    was_training = text_encoder.training
    text_encoder.requires_grad_(False)
    text_encoder.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, lora_dropout=0.0,
                                        target_modules=targets, init_lora_weights=True), adapter_name=adapter_name)
    text_encoder.set_adapter(adapter_name)
    groups = lora_groups(text_encoder, blocks, adapter_name, config.grouping)
    parameters = [p for group in groups for p in group.parameters]
    for p in parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    text_encoder.train()

    log = []
    for step in tqdm(range(config.steps), desc=f"forgetting ({adapter_name})", disable=not show_progress,
                     leave=False):
        owners = torch.arange(len(forget)).repeat_interleave(config.nearby_per_identity)
        cosines = torch.empty(len(owners)).uniform_(config.radius, 1.0, generator=generator)
        forget_batch = torch.cat([forget, perturb(forget[owners], cosines, generator=generator)])
        owners = torch.cat([torch.arange(len(forget)), owners])
        retain_batch = torch.cat([retain, random_identities(config.random_per_step, dim, generator=generator)])
        batch = torch.cat([forget_batch, retain_batch])
        wanted = torch.cat([swap_identity(forget_batch, forget[owners], neutral), retain_batch])
        with torch.no_grad():
            text_encoder.disable_adapters()
            target = _conditioning(pipe, wanted)
            text_encoder.enable_adapters()
        out = _conditioning(pipe, batch)
        error = (out - target).flatten(1).pow(2).sum(1) / scale  # squared, in units of `scale`
        forget_loss = error[:len(forget_batch)].mean()
        retain_loss = (error[len(forget_batch):] + 1e-12).sqrt().mean()  # plain distances (module docstring)
        alpha = config.alpha if step >= config.warmup_steps else 0.0
        structure = group_lasso([g.parameters for g in groups])
        loss = retain_loss + config.beta * forget_loss + alpha * structure
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({"step": step, "forget": forget_loss.item(), "retain": retain_loss.item(),
                    "structure": structure.item()})

    text_encoder.train(was_training)
    text_encoder.requires_grad_(False)
    state = _adapter_state_dict(text_encoder, adapter_name)
    group_norms = {group.name: group.norm() for group in groups}
    _fuse_and_remove(text_encoder, adapter_name)
    metrics, to_neutral = conditioning_metrics(pipe, reference, neutral_target, yardstick)
    result = GeneratorForgetResult(adapter_name=adapter_name, identities=forget, neutral=neutral[0],
                                   lora_state_dict=state, metrics=metrics, group_norms=group_norms,
                                   config=config, to_neutral=to_neutral, log=log)
    if save_dir is not None:
        result.save(save_dir)
    return result
