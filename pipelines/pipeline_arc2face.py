"""Arc2Face-style identity-to-face generation on Stable Diffusion 1.5.

Arc2Face (Papantoniou et al., ECCV 2024) fine-tunes SD 1.5's UNet and CLIP text encoder so that a
face-recognition embedding alone describes the image. The embedding enters through the text
encoder: the fixed prompt ``photo of a id person`` is tokenised, the *input embedding* of the
token ``id`` is replaced by the L2-normalised identity vector (zero-padded to the text width) and
the whole sequence goes through the text transformer. Its last hidden state is the UNet's
``prompt_embeds``; the rest is plain Stable Diffusion with classifier-free guidance against the
empty prompt.

So this pipeline *is* a :class:`~diffusers.StableDiffusionPipeline` with one new step,
:meth:`Arc2FacePipeline.encode_identity`, in front of the stock ``__call__``. Everything else —
schedulers, LoRA loading, offloading, callbacks — is diffusers' own code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput, USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers
from transformers import CLIPTextModel

from idgen.faces.published import FACE_BACKENDS
from idgen.identity import normalize

from .face_input import FaceInputMixin, identity_rows, photo_list
from .lcm import LCMLoRAMixin

#: The prompt Arc2Face was trained with; the word ``id`` marks where the identity goes.
ARC2FACE_PROMPT = "photo of a id person"
ID_WORD = "id"
#: Defaults of the reference implementation (DPM-Solver++ is set by :meth:`Arc2FacePipeline.from_arc2face`).
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.0
#: The LCM-LoRA distilled from SD 1.5, and the settings it is meant for.
LCM_LORA_SD15 = "latent-consistency/lcm-lora-sdv1-5"
LCM_PRESET = {"num_inference_steps": 4, "guidance_scale": 1.0}

FaceImages = Union[str, os.PathLike, PIL.Image.Image, np.ndarray, Sequence]


@dataclass
class Arc2FacePipelineOutput(BaseOutput):
    """Result of :class:`Arc2FacePipeline`.

    Args:
        images: the generated images (PIL list, NumPy array or tensor, per ``output_type``), in the
            order identity 0 image 0, identity 0 image 1, …, identity 1 image 0, …
        nsfw_content_detected: the safety checker's flags, or ``None`` without one.
        id_embeds: ``len(images) × D`` float32 tensor: the unit identity vector each image was made
            from (face photos in → the embeddings the analyser found).
    """

    images: Union[list, np.ndarray, torch.Tensor]
    nsfw_content_detected: Optional[list]
    id_embeds: torch.Tensor


class Arc2FaceMixin(LCMLoRAMixin, FaceInputMixin):
    """Arc2Face's identity conditioning, for any Stable Diffusion 1.5 pipeline class.

    Put it first among the bases of a diffusers SD 1.5 pipeline (text-to-image, img2img, inpaint):
    its ``__call__`` turns identities into ``prompt_embeds`` with :meth:`encode_identity` and hands
    everything else to the diffusers ``__call__`` behind it, so ``image``, ``strength``,
    ``mask_image``, ``padding_mask_crop`` … behave exactly as in diffusers. Components are SD 1.5's
    (``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler``, optional
    ``safety_checker``/``feature_extractor``/``image_encoder``), with Arc2Face's fine-tuned UNet and
    text encoder in place of the originals; :meth:`from_arc2face` assembles them from the published
    folder layout. Photos are turned into embeddings by the analyser set with
    :meth:`set_face_analyzer`: :attr:`face_backends`, the analysis Arc2Face was trained with
    (``pipe.set_face_analyzer(pipe.face_backends.analyzer())``).
    """

    #: Arc2Face's own ``arcface.onnx`` (trained on WebFace42M) on insightface ``antelopev2`` detections
    face_backends = FACE_BACKENDS["arc2face"]
    lcm_lora_default = LCM_LORA_SD15
    lcm_preset = LCM_PRESET
    #: the prompt is fixed: the identity becomes ``prompt_embeds``
    parent_arguments_taken = frozenset({"prompt", "prompt_embeds"})

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_arc2face(cls, base_model: Union[str, os.PathLike], arc2face_model: Union[str, os.PathLike], *,
                      dtype: Optional[torch.dtype] = None, unet_subfolder: str = "arc2face",
                      encoder_subfolder: str = "encoder", **kwargs) -> "Arc2FacePipeline":
        """Assemble the pipeline from an SD 1.5 base and an Arc2Face checkpoint, the way the
        reference does: ``arc2face_model`` (hub id such as ``"FoivosPar/Arc2Face"`` or a folder) holds
        the UNet in ``arc2face/`` and the text encoder in ``encoder/``; everything else comes from
        ``base_model`` (e.g. ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``). The scheduler becomes
        DPM-Solver++ built from the base's scheduler config. No safety checker unless one is passed.

        ``cache_dir``, ``local_files_only`` and ``token`` in ``kwargs`` apply to both checkpoints;
        all ``kwargs`` go to :meth:`~diffusers.DiffusionPipeline.from_pretrained` of the base.
        """
        hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token") if k in kwargs}
        unet = UNet2DConditionModel.from_pretrained(arc2face_model, subfolder=unet_subfolder,
                                                    dtype=dtype, **hub)
        text_encoder = CLIPTextModel.from_pretrained(arc2face_model, subfolder=encoder_subfolder,
                                                     dtype=dtype, **hub)
        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("feature_extractor", None)
        kwargs.setdefault("requires_safety_checker", kwargs["safety_checker"] is not None)
        pipe = cls.from_pretrained(base_model, unet=unet, text_encoder=text_encoder, dtype=dtype,
                                   **kwargs)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        return pipe

    # ------------------------------------------------------------------ identity conditioning
    @property
    def identity_token_id(self) -> int:
        """Vocabulary id of the word ``id`` (1014 in SD 1.5's CLIP tokenizer)."""
        ids = self.tokenizer(ID_WORD, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"the tokenizer splits {ID_WORD!r} into {len(ids)} tokens; Arc2Face needs CLIP's tokenizer")
        return ids[0]

    def encode_identity(self, id_embeds: torch.Tensor, device: Optional[torch.device] = None,
                        lora_scale: Optional[float] = None) -> torch.Tensor:
        """Identity vectors (``N×D``, ``D`` or a list of vectors, any scale) → ``prompt_embeds`` (``N×77×width``).

        The input-embedding row of the token ``id`` is swapped for the unit identity vector,
        zero-padded to the text width, and the text encoder runs its own, unmodified forward over
        the sequence (position embeddings, causal attention, final layer norm). The swap is a
        forward hook on ``text_encoder.get_input_embeddings()``, so no private transformers helper
        (the reference's causal-mask builder broke when transformers changed) is involved and any
        transformers version, LoRA on the text encoder and accelerate offload hooks keep working.
        Like every diffusers pipeline (whose schedulers keep per-call state), one pipeline object
        must not serve concurrent calls; give each worker thread its own.
        """
        device = device or self._execution_device
        ids = normalize(identity_rows(id_embeds))
        width = self.text_encoder.config.hidden_size
        if ids.shape[-1] > width:
            raise ValueError(f"identity vectors have {ids.shape[-1]} dimensions but the text encoder is only "
                             f"{width} wide; use a recogniser whose embedding fits")
        tokens = self.tokenizer([ARC2FACE_PROMPT] * ids.shape[0], padding="max_length",
                                max_length=self.tokenizer.model_max_length, truncation=True,
                                return_tensors="pt").input_ids.to(device)
        at_id = tokens == self.identity_token_id
        rows = F.pad(ids, (0, width - ids.shape[-1])).to(device)

        def put_identity(_module, _inputs, embeddings):
            embeddings = embeddings.clone()
            embeddings[at_id] = rows.to(embeddings.dtype)
            return embeddings

        if lora_scale is not None and USE_PEFT_BACKEND:
            scale_lora_layers(self.text_encoder, lora_scale)
        hook = self.text_encoder.get_input_embeddings().register_forward_hook(put_identity)
        try:
            prompt_embeds = self.text_encoder(tokens)[0]
        finally:
            hook.remove()
            if lora_scale is not None and USE_PEFT_BACKEND:
                unscale_lora_layers(self.text_encoder, lora_scale)
        return prompt_embeds.to(device=device, dtype=self.text_encoder.dtype)

    def embed_faces(self, face_images: FaceImages, policy: str = "largest") -> torch.Tensor:
        """Photos (one, or a list) → ``N×D`` float32 embeddings with the pipeline's face analyser;
        raises :class:`~idgen.errors.NoFaceError` naming the photo when it holds no face."""
        faces = self.analyze_faces(photo_list(face_images), policy=policy)
        return torch.from_numpy(np.stack([face.embedding for face in faces]).astype(np.float32))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, id_embeds: Optional[torch.Tensor] = None, face_images: Optional[FaceImages] = None, *,
                 num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
                 num_images_per_prompt: int = 1, face_policy: str = "largest", **kwargs):
        """Generate ``num_images_per_prompt`` images for each identity.

        Args:
            id_embeds: ``N×D`` (or ``D``, or a list of vectors) identity embeddings, e.g. ArcFace
                vectors; normalised here.
            face_images: instead of ``id_embeds``: a photo or a list of photos (paths, PIL images,
                RGB arrays), one identity each, analysed with the pipeline's face analyser.
            face_policy: ``"largest"`` face of each photo, or ``"single"`` to refuse group photos.
            num_inference_steps, guidance_scale, num_images_per_prompt: as in Stable Diffusion;
                Arc2Face's defaults are 25 steps at guidance 3.0.
            **kwargs: any other argument of the diffusers pipeline behind the mixin (listed in the
                signature of each pipeline class: ``height``,
                ``width``, ``generator`` — a list of ``N × num_images_per_prompt`` generators gives
                every image its own seed, so image k does not depend on the rest of the batch —
                ``latents``, ``negative_prompt_embeds``, ``output_type``, ``return_dict``,
                ``cross_attention_kwargs``, ``callback_on_step_end``, …). The negative conditioning
                defaults to the empty prompt through the same text encoder, as in Arc2Face.

        Returns:
            :class:`Arc2FacePipelineOutput`, or ``(images, nsfw_content_detected, id_embeds)`` with
            ``return_dict=False``.
        """
        for text_argument in ("prompt", "prompt_embeds"):
            if text_argument in kwargs:
                raise TypeError(f"Arc2FacePipeline takes no {text_argument!r}: its prompt is fixed and "
                                "the identity (id_embeds or face_images) is the only condition")
        if (id_embeds is None) == (face_images is None):
            raise ValueError("pass exactly one of id_embeds (identity vectors) or face_images (photos)")
        if face_images is not None:
            id_embeds = self.embed_faces(face_images, policy=face_policy)
        ids = normalize(identity_rows(id_embeds))
        lora_scale = (kwargs.get("cross_attention_kwargs") or {}).get("scale")
        prompt_embeds = self.encode_identity(ids, lora_scale=lora_scale)

        return_dict = kwargs.pop("return_dict", True)
        output = super().__call__(prompt_embeds=prompt_embeds, num_inference_steps=num_inference_steps,
                                  guidance_scale=guidance_scale, num_images_per_prompt=num_images_per_prompt,
                                  return_dict=True, **kwargs)
        per_image = ids.repeat_interleave(num_images_per_prompt, dim=0)
        if not return_dict:
            return output.images, output.nsfw_content_detected, per_image
        return Arc2FacePipelineOutput(images=output.images, nsfw_content_detected=output.nsfw_content_detected,
                                      id_embeds=per_image)

    # ------------------------------------------------------------------ speed
    def compile_unet(self, **compile_kwargs) -> None:
        """Opt-in ``torch.compile`` of the UNet (in place, so saving and LoRA loading still see a
        normal module), in ``channels_last`` memory format, which convolutions prefer on GPUs. The
        first call compiles (minutes for SD 1.5); keep image sizes and batch sizes fixed afterwards.
        ``compile_kwargs`` go to :func:`torch.compile`, e.g. ``mode="max-autotune"``."""
        self.unet.to(memory_format=torch.channels_last)
        self.unet.compile(**compile_kwargs)


class Arc2FacePipeline(Arc2FaceMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.5 text-to-image conditioned on a face-recognition embedding, as in Arc2Face
    (see :class:`Arc2FaceMixin` for the conditioning, loading and speed helpers)."""
