"""InstantID-style generation on SDXL: identity from one face, a free text prompt, a pose.

InstantID adds two things to an SDXL base, and both map onto diffusers' own machinery:

* an IP-Adapter whose image projection is a Perceiver Resampler turning the raw 512-d insightface
  embedding into 16 face tokens. Its ``ip-adapter.bin`` has the layout of IP-Adapter Plus
  (``image_proj`` Resampler weights; ``ip_adapter`` ``to_k_ip`` / ``to_v_ip`` weights keyed by
  attention-processor index), so diffusers' ``load_ip_adapter`` converts it into an
  ``IPAdapterPlusImageProjection`` and ``IPAdapterAttnProcessor2_0`` layers, and
  ``set_ip_adapter_scale`` / ``unload_ip_adapter`` work unchanged. The face embedding goes in as
  ``ip_adapter_image_embeds``; the negative is a zero embedding through the same Resampler.
* IdentityNet, a standard SDXL ``ControlNetModel`` whose condition image is the five face keypoints
  (:func:`~idgen.pipelines.keypoints.draw_keypoints`) and whose cross-attention sees the face
  tokens instead of the text. The parent pipeline hands the ControlNet the text embeddings, so for
  the length of one call a forward pre-hook on the IdentityNet swaps them for the face tokens.
  Extra ControlNets of a multi-ControlNet list keep the text, as they were trained.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.models.embeddings import IPAdapterPlusImageProjection, MultiIPAdapterImageProjection

from idgen.errors import ConfigError, IdgenError, ModelFilesMissingError
from idgen.faces import load_image
from idgen.io import read_torch_weights, save_safetensors_atomic

from .face_input import FaceInputMixin, photo_list, renamed_argument
from .keypoints import draw_keypoints, scale_keypoints
from .lcm import LCMLoRAMixin

#: Defaults of the reference implementation.
DEFAULT_IP_ADAPTER_SCALE = 0.8
DEFAULT_CONTROLNET_SCALE = 0.8
DEFAULT_STEPS = 30
#: LCM-LoRA preset: few steps, light guidance (LCM-LoRA's documented range is 1–2).
LCM_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"
LCM_PRESET = {"num_inference_steps": 5, "guidance_scale": 1.5}


def convert_instantid_adapter(source: Union[str, os.PathLike], target: Union[str, os.PathLike]) -> None:
    """Write InstantID's pickled ``ip-adapter.bin`` as safetensors (``image_proj.*`` / ``ip_adapter.*``
    keys, tensors unchanged), the layout ``load_ip_adapter`` reads from a ``.safetensors`` file.

    The ``.bin`` is read with ``torch.load(weights_only=True)``: plain tensors only, no code runs.
    """
    state = read_torch_weights(source, "pass InstantID's ip-adapter.bin (InstantX/InstantID)")
    if not isinstance(state, dict) or not {"image_proj", "ip_adapter"} <= state.keys():
        raise ConfigError(f"{source} is not an IP-Adapter checkpoint (needs 'image_proj' and 'ip_adapter')")
    flat = {f"{part}.{key}": value.contiguous() for part in ("image_proj", "ip_adapter")
            for key, value in state[part].items()}
    save_safetensors_atomic(flat, target)


class InstantIDMixin(LCMLoRAMixin, FaceInputMixin):
    """InstantID's identity and pose conditioning, for any SDXL ControlNet pipeline class.

    Put it first among the bases of a diffusers SDXL ControlNet pipeline (text-to-image, img2img,
    inpaint): its ``__call__`` turns the face into IP-Adapter embeddings, IdentityNet face tokens
    and a keypoint image, and hands everything else to the diffusers ``__call__`` behind it. The
    keypoint image goes in as :attr:`control_image_argument` — ``image`` for text-to-image,
    ``control_image`` for img2img / inpaint, where ``image`` is the photo being edited.
    """

    #: The name under which the parent pipeline takes the ControlNet condition image(s).
    control_image_argument = "image"
    lcm_lora_default = LCM_LORA_SDXL
    lcm_preset = LCM_PRESET

    # ------------------------------------------------------------------ loading
    def load_instantid_adapter(self, pretrained_model_name_or_path_or_dict="InstantX/InstantID", *,
                               weight_name: str = "ip-adapter.bin", subfolder: str = "",
                               scale: float = DEFAULT_IP_ADAPTER_SCALE, **kwargs) -> None:
        """Load InstantID's face adapter (the original ``ip-adapter.bin``, a safetensors copy made by
        :func:`convert_instantid_adapter`, or the state dict itself) through ``load_ip_adapter``.

        No CLIP image encoder is involved: the adapter's input is a face-recognition embedding.
        """
        try:
            self.load_ip_adapter(pretrained_model_name_or_path_or_dict, subfolder=subfolder,
                                 weight_name=weight_name, image_encoder_folder=None, **kwargs)
        except OSError as error:
            raise ModelFilesMissingError(
                f"cannot read {weight_name} from {pretrained_model_name_or_path_or_dict}: {error}; download "
                "InstantX/InstantID (ip-adapter.bin) or pass the folder that holds it"
            ) from error
        self._face_resampler()  # fail now, not at the first call, if this was not a Resampler adapter
        self.set_ip_adapter_scale(scale)

    # ------------------------------------------------------------------ helpers
    def _face_resampler(self) -> IPAdapterPlusImageProjection:
        projection = getattr(self.unet, "encoder_hid_proj", None)
        if not isinstance(projection, MultiIPAdapterImageProjection):
            raise IdgenError("no face adapter loaded; call pipe.load_instantid_adapter('InstantX/InstantID') first")
        resampler = projection.image_projection_layers[0]
        if not isinstance(resampler, IPAdapterPlusImageProjection):
            raise ConfigError(
                f"the loaded IP-Adapter projects with {type(resampler).__name__}, not InstantID's Resampler; "
                "load InstantX/InstantID's ip-adapter.bin with load_instantid_adapter"
            )
        return resampler

    def _identity_net(self) -> ControlNetModel:
        if isinstance(self.controlnet, MultiControlNetModel):
            return self.controlnet.nets[0]
        return self.controlnet

    def _default_size(self, width: int, height: int) -> tuple[int, int]:
        """The base model's native pixel count with the aspect ratio of ``width × height``."""
        side = self.unet.config.sample_size * self.vae_scale_factor
        step = 8 * self.vae_scale_factor
        scale = side / (width * height) ** 0.5
        return (max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step))

    def _face_tokens(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative, positive) face tokens of ``embeddings`` (N × D): zeros and faces through the
        Resampler, computed where its weights are (CPU under model offload)."""
        resampler = self._face_resampler()
        weight = resampler.proj_in.weight
        faces = embeddings.to(weight.device, weight.dtype)[:, None, :]
        return resampler(torch.zeros_like(faces)), resampler(faces)

    @contextlib.contextmanager
    def _identity_net_sees_faces(self, negative: torch.Tensor, positive: torch.Tensor):
        """For the duration of the block, the IdentityNet's ``encoder_hidden_states`` are the face
        tokens laid out like the text batch it is given: ``[negative; positive]`` under classifier-free
        guidance, ``positive`` alone without it or in guess mode."""
        both = torch.cat([negative, positive])

        def use_face_tokens(module, args, kwargs):
            text = kwargs["encoder_hidden_states"]
            tokens = both if text.shape[0] == both.shape[0] else positive
            kwargs["encoder_hidden_states"] = tokens.to(text.device, text.dtype)
            return args, kwargs

        handle = self._identity_net().register_forward_pre_hook(use_face_tokens, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _ip_adapter_scale(self, scale):
        """Apply ``scale`` (anything ``set_ip_adapter_scale`` takes) for one call, then restore."""
        if scale is None:
            yield
            return
        processors = [p for p in self.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
        saved = [list(p.scale) for p in processors]
        self.set_ip_adapter_scale(scale)
        try:
            yield
        finally:
            for processor, scales in zip(processors, saved):
                processor.scale = scales

    def _identity(self, face_images, id_embeds):
        """The identity embeddings (N × D) and, for photos, the first one's face and photo (for a
        default pose)."""
        if (face_images is None) == (id_embeds is None):
            raise ValueError("pass exactly one of face_images (photos) and id_embeds (N × 512 raw embeddings)")
        if face_images is not None:
            photos = photo_list(face_images)
            faces = self.analyze_faces(photos)
            embeddings = torch.from_numpy(np.stack([face.embedding for face in faces]).astype(np.float32))
            return embeddings, faces[0], photos[0]
        embedding = torch.as_tensor(np.asarray(id_embeds, dtype=np.float32))
        return embedding.reshape(-1, embedding.shape[-1]), None, None

    def _keypoint_image(self, face, photo, pose_image, keypoints, width, height):
        """Draw the IdentityNet's condition image at the output size, or return ``None`` when there
        is no pose source (then the caller's ``image`` is the ready-made keypoint image)."""
        if keypoints is not None:
            if width is None or height is None:
                width = height = self.unet.config.sample_size * self.vae_scale_factor
            return draw_keypoints(keypoints, (width, height)), width, height
        if pose_image is not None:
            landmarks = self.analyze_faces([pose_image])[0].landmarks
            source = pose_image
        elif face is not None:
            landmarks, source = face.landmarks, photo
        else:
            return None, width, height
        source_height, source_width = load_image(source).shape[:2]
        if width is None or height is None:
            width, height = self._default_size(source_width, source_height)
        scaled = scale_keypoints(landmarks, (width / source_width, height / source_height))
        return draw_keypoints(scaled, (width, height)), width, height

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, prompt: Union[str, list[str], None] = None, *,
                 id_embeds=None, face_images=None, pose_image=None,
                 keypoints: Optional[Sequence[Sequence[float]]] = None,
                 ip_adapter_scale=None,
                 controlnet_conditioning_scale: Union[float, list[float]] = DEFAULT_CONTROLNET_SCALE,
                 num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = 5.0,
                 height: Optional[int] = None, width: Optional[int] = None,
                 num_images_per_prompt: int = 1, **kwargs):
        """Generate images of the identity in ``face_images`` (a photo, or a list of photos, one
        identity each; needs ``set_face_analyzer``) or ``id_embeds`` (the raw, un-normalised
        insightface embedding, 512-d, one row per prompt or one for all) — the identity arguments of
        :class:`Arc2FacePipeline` too. ``face_image`` / ``face_embedding``, the names of earlier
        releases, still work and warn.

        The pose comes from ``keypoints`` (5×2 pixels in the output image), else from the face in
        ``pose_image``, else from the face in the (first) photo; with none of these, ``image`` is used as
        the ready-made keypoint image. With a multi-ControlNet, ``image`` holds the condition images
        of the ControlNets after the IdentityNet. (``image`` here means :attr:`control_image_argument`:
        ``control_image`` in the img2img / inpaint variants.) ``ip_adapter_scale`` applies to this call only
        (``None`` keeps the scale set by ``set_ip_adapter_scale``; the loader sets 0.8). All other
        arguments are those of :class:`~diffusers.StableDiffusionXLControlNetPipeline`. Argument
        mistakes raise ``ValueError``, as in diffusers.
        """
        id_embeds = renamed_argument(kwargs, "face_embedding", "id_embeds", id_embeds)
        face_images = renamed_argument(kwargs, "face_image", "face_images", face_images)
        image = kwargs.pop(self.control_image_argument, None)
        embeddings, face, face_source = self._identity(face_images, id_embeds)
        expected = self._face_resampler().proj_in.in_features
        if embeddings.shape[-1] != expected:
            raise ValueError(
                f"the face embedding has {embeddings.shape[-1]} values but the adapter expects {expected}; "
                "InstantID needs insightface antelopev2 embeddings (FaceAnalyzer.from_backend('antelopev2', 'pack'))"
            )
        kps_image, width, height = self._keypoint_image(face, face_source, pose_image, keypoints, width, height)
        multi = isinstance(self.controlnet, MultiControlNetModel)
        if kps_image is not None:
            if image is not None and not multi:
                raise ValueError("pass either a pose (keypoints / pose_image / face_images) or "
                                 f"{self.control_image_argument}, not both")
            extra = [] if image is None else image if isinstance(image, list) else [image]
            image = [kps_image, *extra] if multi else kps_image
        elif image is None:
            raise ValueError("no pose: pass keypoints, pose_image, face_images, or a keypoint image as "
                             f"{self.control_image_argument}")

        if prompt is None:
            batch_size = kwargs["prompt_embeds"].shape[0]
        else:
            batch_size = 1 if isinstance(prompt, str) else len(prompt)
        if len(embeddings) not in (1, batch_size):
            raise ValueError(f"{len(embeddings)} identities for {batch_size} prompts; pass one or one per prompt")
        if len(embeddings) > 1 and num_images_per_prompt > 1:
            raise ValueError("one identity per prompt works with num_images_per_prompt=1; pass a single one instead")
        embeddings = embeddings.expand(batch_size, -1)

        negative, positive = self._face_tokens(embeddings)
        negative = negative.repeat_interleave(num_images_per_prompt, dim=0)
        positive = positive.repeat_interleave(num_images_per_prompt, dim=0)
        guided = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        faces = embeddings[:, None, None, :]
        ip_embeds = torch.cat([torch.zeros_like(faces), faces]) if guided else faces

        with self._identity_net_sees_faces(negative, positive), self._ip_adapter_scale(ip_adapter_scale):
            return super().__call__(
                prompt=prompt, height=height, width=width, **{self.control_image_argument: image},
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt,
                ip_adapter_image_embeds=[ip_embeds.to(self.unet.dtype)],
                controlnet_conditioning_scale=controlnet_conditioning_scale, **kwargs,
            )


class InstantIDPipeline(InstantIDMixin, StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet ControlNet + InstantID IP-Adapter.

    >>> identitynet = ControlNetModel.from_pretrained("InstantX/InstantID", subfolder="ControlNetModel")
    >>> pipe = InstantIDPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0",
    ...                                          controlnet=identitynet, dtype=torch.float16)
    >>> pipe.load_instantid_adapter("InstantX/InstantID")          # ip-adapter.bin
    >>> pipe.set_face_analyzer(FaceAnalyzer.from_backend("antelopev2", "pack"))
    >>> image = pipe("a watercolour portrait", face_images="me.jpg", pose_image="pose.jpg").images[0]

    ``controlnet`` may be a list: the first entry is the IdentityNet, the others are ordinary SDXL
    ControlNets whose condition images are passed as ``image``.
    """
