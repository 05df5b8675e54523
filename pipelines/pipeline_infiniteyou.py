"""InfiniteYou-style generation on FLUX: identity from one face, a free text prompt, an optional pose.

InfiniteYou (ByteDance) is the InstantID recipe moved to FLUX.1-dev, and it maps onto diffusers'
Flux ControlNet pipeline without touching its denoising loop:

* the face's 512-d ArcFace embedding, L2-normalised, goes through a Perceiver Resampler
  (:class:`~idgen.pipelines.infiniteyou_projection.InfiniteYouProjection`) to 8 tokens as wide as
  FLUX's text states;
* InfuseNet, a standard :class:`~diffusers.FluxControlNetModel` (4 double- and 10 single-stream
  blocks), reads those tokens in place of the prompt — with zero text position ids and an embedded
  guidance of 1 — plus a condition image: the five face keypoints drawn as for InstantID, or black
  when no pose is asked for. Its residuals are added to the FLUX transformer, which sees only the
  text. The parent pipeline hands the ControlNet the text states, so for the length of one call a
  forward pre-hook on InfuseNet swaps them for the identity tokens.

Seeds: like every diffusers ControlNet pipeline, this one samples the condition image's VAE latents
from ``generator`` before the starting noise, so a seed gives other noise than in plain
:class:`~diffusers.FluxPipeline`; pass ``latents`` to share noise between the two.

One difference from the reference loop is diffusers', not ours: with ``true_cfg_scale > 1`` and a
negative prompt, diffusers adds the ControlNet residuals to the negative pass too, where InfiniteYou
leaves them out.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxControlNetModel, FluxControlNetPipeline,
                       FluxTransformer2DModel)
from diffusers.models.controlnets.controlnet_flux import FluxMultiControlNetModel
from diffusers.utils import BaseOutput
from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection,
                          T5EncoderModel, T5TokenizerFast)

from idgen.errors import IdgenError, ModelFilesMissingError
from idgen.faces import load_image
from idgen.faces.published import FACE_BACKENDS
from idgen.identity import normalize

from .face_input import FaceInputMixin, identity_rows, photo_list, prompt_batch_size
from .infiniteyou_projection import INFINITEYOU_REPO, InfiniteYouProjection, infiniteyou_subfolder
from .keypoints import draw_keypoints, scale_keypoints

#: Defaults of the reference implementation.
DEFAULT_INFUSENET_SCALE = 1.0
DEFAULT_GUIDANCE = 3.5
DEFAULT_STEPS = 30
#: The reference's output size when none is asked for (portrait, 3:4).
DEFAULT_WIDTH, DEFAULT_HEIGHT = 864, 1152
#: InfuseNet's own embedded guidance: the reference passes 1.0 whatever FLUX's guidance is.
INFUSENET_GUIDANCE = 1.0


@dataclass
class InfiniteYouPipelineOutput(BaseOutput):
    """Result of :class:`InfiniteYouPipeline`.

    Args:
        images: the generated images (PIL list, NumPy array or tensor, per ``output_type``).
        id_embeds: ``len(images) × 512`` float32 tensor: the unit identity vector each image was made from.
    """

    images: Union[list, np.ndarray, torch.Tensor]
    id_embeds: torch.Tensor


def letterbox_size(source_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(width, height)`` a ``source_size`` photo is resized to on a ``target_size`` canvas: the
    target's width for portrait or square targets, else its height, the other side keeping the
    photo's aspect ratio and truncated to whole pixels. The ratio is taken first, as the reference
    takes it: a 1080×305 photo on an 864-wide canvas is ``int(864 * (305 / 1080)) = 243`` px tall,
    where ``864 * 305 / 1080`` would give 244."""
    (source_width, source_height), (width, height) = source_size, target_size
    if width <= height:
        return width, int(width * (source_height / source_width))
    return int(height * (source_width / source_height)), height


def letterbox_keypoints(landmarks, source_size: tuple[int, int], target_size: tuple[int, int]) -> np.ndarray:
    """Where ``landmarks`` (pixels in a ``source_size = (width, height)`` photo) land when the photo is
    resized to :func:`letterbox_size` and centred on the ``target_size`` canvas — the reference's
    placement of a pose photo on the output canvas — in the landmarks' own float dtype."""
    (source_width, source_height), (width, height) = source_size, target_size
    new_width, new_height = letterbox_size(source_size, target_size)
    return scale_keypoints(landmarks, (new_width / source_width, new_height / source_height),
                           ((width - new_width) // 2, (height - new_height) // 2))


class InfiniteYouMixin(FaceInputMixin):
    """InfiniteYou's identity and pose conditioning, for a diffusers Flux ControlNet pipeline class.

    Put it first among the bases of a diffusers Flux ControlNet pipeline (text-to-image, img2img,
    inpaint): its ``__call__`` turns the face into identity tokens for InfuseNet and a keypoint image
    (diffusers' ``control_image``: ``image`` is the photo being edited in the img2img / inpaint
    variants), and hands everything else to the diffusers ``__call__`` behind it. Its ``__init__``
    takes the components every Flux ControlNet pipeline has plus ``identity_projection``, so that
    ``from_pretrained`` and ``from_pipe`` carry the projection between the variants. The projection
    is required: ``from_pretrained`` / ``from_pipe`` of a plain FLUX pipeline need
    ``identity_projection=InfiniteYouProjection.from_infiniteyou(...)``.
    """

    #: facexlib's IR-SE50 ArcFace on insightface ``antelopev2`` detections, fed the BGR 112×112 aligned crop
    #: in [-1, 1] (the ``ir_se50:`` recogniser); its file sits in the antelopev2 folder
    face_backends = FACE_BACKENDS["infiniteyou"]
    #: The output size when ``width`` / ``height`` are not given: the reference's 864×1152.
    default_width, default_height = DEFAULT_WIDTH, DEFAULT_HEIGHT
    #: InfuseNet's own scale and schedule are ``infusenet_*`` arguments
    parent_arguments_taken = frozenset({"controlnet_conditioning_scale", "control_guidance_start",
                                        "control_guidance_end"})

    # annotated: from_pipe hands a component over only when its type matches the annotation
    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, text_encoder_2: T5EncoderModel, tokenizer_2: T5TokenizerFast,
                 transformer: FluxTransformer2DModel,
                 controlnet: Union[FluxControlNetModel, FluxMultiControlNetModel, list, tuple],
                 identity_projection: InfiniteYouProjection):
        super().__init__(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                         controlnet=controlnet)
        self.register_modules(identity_projection=identity_projection)

    # ------------------------------------------------------------------ helpers
    def _infusenet(self) -> FluxControlNetModel:
        return self.controlnet.nets[0] if isinstance(self.controlnet, FluxMultiControlNetModel) else self.controlnet

    def _projection(self) -> InfiniteYouProjection:
        if self.identity_projection is None:   # a required component can still be set to None by hand
            raise IdgenError("no identity projection; pass identity_projection=InfiniteYouProjection."
                             "from_infiniteyou('ByteDance/InfiniteYou') to from_pretrained, or use "
                             "load_infiniteyou_pipeline")
        return self.identity_projection

    def identity_tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Identity tokens (N × 8 × 4096) of unit embeddings (N × 512), computed where the projection's
        weights are (CPU under model offload)."""
        weight = self._projection().resampler.proj_in.weight
        return self._projection()(embeddings.to(weight.device, weight.dtype))

    def _identity(self, face_images, id_embeds):
        """Unit identity embeddings (N × D): one per photo, or the rows of ``id_embeds``."""
        if (face_images is None) == (id_embeds is None):
            raise ValueError("pass exactly one of face_images (photos) and id_embeds (N × 512 embeddings)")
        if face_images is not None:
            id_embeds = np.stack([face.embedding for face in self.analyze_faces(photo_list(face_images))])
        return normalize(identity_rows(id_embeds))

    def _pose_image(self, pose_image, keypoints, width: int, height: int):
        """InfuseNet's condition image at the output size: keypoints as given (pixels of the output;
        N × 5 × 2 gives one image per generated image), else those of the face in ``pose_image``
        placed as the reference places the photo, else black. (Unlike InstantID, the identity photo
        is not a default pose: without one, InfiniteYou draws the face in whatever pose the prompt
        suggests.)"""
        if keypoints is not None:
            points = np.asarray(keypoints)   # drawn in their own dtype, as the reference draws them
            if points.ndim == 3:
                return [draw_keypoints(one, (width, height)) for one in points]
            return draw_keypoints(points, (width, height))
        if pose_image is not None:
            landmarks = self.analyze_faces([pose_image])[0].landmarks
            source_height, source_width = load_image(pose_image).shape[:2]
            return draw_keypoints(letterbox_keypoints(landmarks, (source_width, source_height), (width, height)),
                                  (width, height))
        return PIL.Image.new("RGB", (width, height))

    @contextlib.contextmanager
    def _infusenet_sees_identity(self, tokens: torch.Tensor):
        """For the duration of the block, InfuseNet's ``encoder_hidden_states`` are the identity tokens
        (one row per image), its text position ids zeros, its embedded guidance 1."""

        def use_identity(module, args, kwargs):
            text = kwargs["encoder_hidden_states"]
            kwargs["encoder_hidden_states"] = tokens.to(text.device, text.dtype)
            kwargs["txt_ids"] = kwargs["txt_ids"].new_zeros(tokens.shape[1], kwargs["txt_ids"].shape[-1])
            if kwargs.get("guidance") is not None:
                kwargs["guidance"] = torch.full_like(kwargs["guidance"], INFUSENET_GUIDANCE)
            return args, kwargs

        handle = self._infusenet().register_forward_pre_hook(use_identity, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, prompt: Union[str, list[str], None] = None, *,
                 id_embeds=None, face_images=None, pose_image=None,
                 keypoints: Optional[Sequence[Sequence[float]]] = None,
                 infusenet_conditioning_scale: Union[float, list[float]] = DEFAULT_INFUSENET_SCALE,
                 infusenet_guidance_start: float = 0.0, infusenet_guidance_end: float = 1.0,
                 guidance_scale: float = DEFAULT_GUIDANCE, num_inference_steps: int = DEFAULT_STEPS,
                 height: Optional[int] = None, width: Optional[int] = None,
                 num_images_per_prompt: int = 1, **kwargs):
        """Generate images of the identity in ``face_images`` (a photo, or a list of photos, one
        identity each; needs ``set_face_analyzer``) or ``id_embeds`` (512-d ArcFace embeddings, one
        row per prompt or one for all; normalised here) — the identity arguments of every idgen pipeline.

        ``width`` × ``height`` default to :attr:`default_width` × :attr:`default_height`, the reference's
        864×1152. The pose comes from ``keypoints`` (5×2 pixels in the output image, or N×5×2: one pose per
        prompt) or from the face in ``pose_image``; with neither, InfuseNet gets a black condition
        image, as in the reference.
        ``infusenet_conditioning_scale`` scales InfuseNet's residuals (0 leaves plain FLUX);
        ``infusenet_guidance_start`` / ``_end`` limit them to part of the schedule. ``guidance_scale``
        is FLUX.1-dev's embedded guidance. With a :class:`FluxMultiControlNetModel`, InfuseNet comes
        first and ``control_image`` holds the images of the ControlNets after it. Everything else is
        the diffusers pipeline's (``generator`` — one per image —, ``latents``, ``output_type``,
        ``joint_attention_kwargs`` with a LoRA ``scale``; ``image``, ``strength``, ``mask_image`` … in
        the img2img / inpaint variants). Returns
        :class:`InfiniteYouPipelineOutput` (``return_dict=False``: ``(images, id_embeds)``).
        """
        embeddings = self._identity(face_images, id_embeds)
        expected = self._projection().config.embedding_dim
        if embeddings.shape[-1] != expected:
            raise ValueError(f"the face embedding has {embeddings.shape[-1]} values but the projection expects "
                             f"{expected}; InfiniteYou needs 512-d ArcFace embeddings")
        height, width = height or self.default_height, width or self.default_width
        pose = self._pose_image(pose_image, keypoints, width, height)
        extra = kwargs.pop("control_image", None)
        if isinstance(self.controlnet, FluxMultiControlNetModel):
            control_image = [pose, *(extra if isinstance(extra, list) else [] if extra is None else [extra])]
        elif extra is not None:
            raise ValueError("InfuseNet draws its own condition image; pass keypoints or pose_image, not control_image")
        else:
            control_image = pose

        batch_size = prompt_batch_size(prompt, kwargs.get("prompt_embeds"))
        if len(embeddings) not in (1, batch_size):
            raise ValueError(f"{len(embeddings)} identities for {batch_size} prompts; pass one or one per prompt")
        if isinstance(pose, list) and (len(pose) != batch_size or num_images_per_prompt != 1):
            raise ValueError(f"{len(pose)} poses (keypoints N × 5 × 2) for {batch_size} prompts × "
                             f"{num_images_per_prompt} images; pass one pose per prompt with num_images_per_prompt=1")
        per_image = embeddings.expand(batch_size, -1).repeat_interleave(num_images_per_prompt, dim=0)
        tokens = self.identity_tokens(per_image)

        return_dict = kwargs.pop("return_dict", True)
        with self._infusenet_sees_identity(tokens):
            output = super().__call__(
                prompt=prompt, height=height, width=width, control_image=control_image,
                controlnet_conditioning_scale=infusenet_conditioning_scale,
                control_guidance_start=infusenet_guidance_start, control_guidance_end=infusenet_guidance_end,
                guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                num_images_per_prompt=num_images_per_prompt, return_dict=True, **kwargs)
        if not return_dict:
            return output.images, per_image
        return InfiniteYouPipelineOutput(images=output.images, id_embeds=per_image)


class InfiniteYouPipeline(InfiniteYouMixin, FluxControlNetPipeline):
    """FLUX.1-dev + InfuseNet ControlNet + InfiniteYou's identity projection.

    >>> variant = "infu_flux_v1.0/aes_stage2"
    >>> infusenet = FluxControlNetModel.from_pretrained("ByteDance/InfiniteYou", subfolder=f"{variant}/InfuseNetModel",
    ...                                                  dtype=torch.bfloat16)
    >>> projection = InfiniteYouProjection.from_infiniteyou("ByteDance/InfiniteYou", variant="aes_stage2")
    >>> pipe = InfiniteYouPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", controlnet=infusenet,
    ...                                            identity_projection=projection, dtype=torch.bfloat16)
    >>> pipe.set_face_analyzer(FaceAnalyzer.from_backend("antelopev2", "pack"))
    >>> image = pipe("a portrait in a garden", face_images="me.jpg").images[0]

    :func:`~idgen.pipelines.load_infiniteyou_pipeline` does the above in one call, with optional
    quantisation. ``save_pretrained`` writes the projection beside the other components.
    """

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer, text_encoder_2: T5EncoderModel, tokenizer_2: T5TokenizerFast,
                 transformer: FluxTransformer2DModel,
                 controlnet: Union[FluxControlNetModel, FluxMultiControlNetModel, list, tuple],
                 identity_projection: InfiniteYouProjection,
                 image_encoder: Optional[CLIPVisionModelWithProjection] = None,
                 feature_extractor: Optional[CLIPImageProcessor] = None):
        # the text-to-image pipeline alone has FLUX's IP-Adapter image encoder among its components
        super().__init__(scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, transformer,
                         controlnet, identity_projection=identity_projection)
        self.register_modules(image_encoder=image_encoder, feature_extractor=feature_extractor)


def load_infiniteyou_pipeline(base: str = "black-forest-labs/FLUX.1-dev", infiniteyou: str = INFINITEYOU_REPO, *,
                              variant: str = "aes_stage2", dtype: torch.dtype = torch.bfloat16,
                              infusenet_quantization_config=None, **kwargs) -> InfiniteYouPipeline:
    """FLUX.1-dev with one InfiniteYou variant's InfuseNet and identity projection, each by hub id or
    local folder, the published files unchanged.

    ``kwargs`` go to :meth:`InfiniteYouPipeline.from_pretrained`; on a consumer card pass diffusers'
    ``quantization_config=PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", quant_kwargs=
    {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
    components_to_quantize=["transformer", "text_encoder_2"])`` and, for InfuseNet,
    ``infusenet_quantization_config=BitsAndBytesConfig(...)``.
    """
    subfolder = infiniteyou_subfolder(variant)
    try:
        infusenet = FluxControlNetModel.from_pretrained(infiniteyou, subfolder=f"{subfolder}/InfuseNetModel",
                                                        dtype=dtype,
                                                        quantization_config=infusenet_quantization_config)
    except OSError as error:
        raise ModelFilesMissingError(f"cannot load InfuseNet ({subfolder}/InfuseNetModel) from {infiniteyou}: "
                                     f"{error}; download {INFINITEYOU_REPO} and pass its folder") from error
    projection = InfiniteYouProjection.from_infiniteyou(infiniteyou, variant=variant).to(dtype=dtype)
    return InfiniteYouPipeline.from_pretrained(base, controlnet=infusenet, identity_projection=projection,
                                               dtype=dtype, **kwargs)
