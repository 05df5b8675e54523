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
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.models.embeddings import IPAdapterPlusImageProjection, MultiIPAdapterImageProjection

from idgen.errors import ConfigError, IdgenError, ModelFilesMissingError
from idgen.faces import load_image
from idgen.faces.published import FACE_BACKENDS
from idgen.io import read_torch_weights, save_safetensors_atomic

from .face_input import FaceInputMixin, identity_rows, photo_list, prompt_batch_size
from .keypoints import draw_keypoints, scale_keypoints
from .lcm import LCMLoRAMixin

#: Defaults of the reference implementation.
DEFAULT_IP_ADAPTER_SCALE = 0.8
DEFAULT_CONTROLNET_SCALE = 0.8
DEFAULT_STEPS = 30
#: LCM-LoRA preset: few steps, light guidance (LCM-LoRA's documented range is 1–2).
LCM_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"
LCM_PRESET = {"num_inference_steps": 5, "guidance_scale": 1.5}
#: Where save_pretrained puts the face adapter (InstantID's published layout, as safetensors), and the
#: model_index.json entry that tells from_pretrained to load it back with its scales.
FACE_ADAPTER_SUBFOLDER = "face_adapter"
FACE_ADAPTER_WEIGHTS = "ip-adapter.safetensors"
FACE_ADAPTER_ENTRY = "_instantid_face_adapter"
#: Resampler parameter names: diffusers' IPAdapterPlusImageProjection → InstantID's ip-adapter.bin
#: (to_k / to_v are joined into the published to_kv).
RESAMPLER_LAYER_KEYS = {"ln0": "0.norm1", "ln1": "0.norm2", "attn.to_q": "0.to_q", "attn.to_out.0": "0.to_out",
                        "ff.0": "1.0", "ff.1.net.0.proj": "1.1", "ff.1.net.2": "1.3"}


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

    The face adapter lives in the UNet as diffusers' IP-Adapter layers; ``save_pretrained`` writes
    it beside the components and ``from_pretrained`` loads it back. Attention slicing and fused QKV
    projections apply to every attention layer but the face adapter's; replacing the face adapter's
    processors (``unet.set_default_attn_processor()``, ``unet.set_attn_processor``) makes the next
    call refuse until the adapter is loaded again.
    """

    #: insightface ``antelopev2``: its detector and its own recogniser, ``glintr100.onnx`` (the raw,
    #: un-normalised embedding goes in)
    face_backends = FACE_BACKENDS["instantid"]
    #: The name under which the parent pipeline takes the ControlNet condition image(s).
    control_image_argument = "image"
    lcm_lora_default = LCM_LORA_SDXL
    lcm_preset = LCM_PRESET
    #: the face is InstantID's one IP-Adapter image
    parent_arguments_taken = frozenset({"ip_adapter_image", "ip_adapter_image_embeds"})

    # ------------------------------------------------------------------ loading
    def load_instantid_adapter(self, pretrained_model_name_or_path_or_dict="InstantX/InstantID", *,
                               weight_name: str = "ip-adapter.bin", subfolder: str = "",
                               scale: float = DEFAULT_IP_ADAPTER_SCALE, **kwargs) -> None:
        """Load InstantID's face adapter (the original ``ip-adapter.bin``, a safetensors copy made by
        :func:`convert_instantid_adapter`, or the state dict itself) through ``load_ip_adapter``.

        No CLIP image encoder is involved: the adapter's input is a face-recognition embedding. A
        pipeline made with ``from_pipe`` shares its UNet with the pipeline it came from and refuses:
        the adapter would change that pipeline's UNet too.
        """
        if getattr(self, "_unet_shared_with", None):
            raise IdgenError(
                f"this pipeline shares its UNet with the {self._unet_shared_with} it was made from with from_pipe, "
                "and loading the face adapter would change that pipeline's UNet too; load it into a pipeline "
                "with its own UNet: InstantIDPipeline.from_pretrained(...), or from_pipe(pipe, "
                "unet=copy.deepcopy(pipe.unet))"
            )
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

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' ``from_pipe``; the new pipeline remembers when it shares the UNet of ``pipeline``,
        so that :meth:`load_instantid_adapter` does not change that pipeline's UNet behind its back."""
        pipe = super().from_pipe(pipeline, **kwargs)
        if pipe.unet is pipeline.unet:
            pipe._unet_shared_with = type(pipeline).__name__
        return pipe

    # ------------------------------------------------------------------ saving
    def face_adapter_state_dict(self) -> dict:
        """The loaded face adapter in InstantID's published ``ip-adapter.bin`` layout (``image_proj``
        Resampler weights; ``ip_adapter`` ``to_k_ip`` / ``to_v_ip`` weights keyed 1, 3, 5 … in UNet
        order, as diffusers' loader counts them): what :meth:`load_instantid_adapter` reads."""
        image_proj, kv = {}, {}
        for key, value in self._face_resampler().state_dict().items():
            value = value.detach().cpu()
            if not key.startswith("layers."):
                image_proj[key] = value
                continue
            _, index, rest = key.split(".", 2)
            module, parameter = rest.rsplit(".", 1)
            if module in ("attn.to_k", "attn.to_v"):
                kv.setdefault(index, {})[module] = value
            else:
                image_proj[f"layers.{index}.{RESAMPLER_LAYER_KEYS[module]}.{parameter}"] = value
        for index, parts in kv.items():
            image_proj[f"layers.{index}.0.to_kv.weight"] = torch.cat([parts["attn.to_k"], parts["attn.to_v"]])
        ip_adapter = {}
        for number, processor in enumerate(self._face_processors().values()):
            for name in ("to_k_ip", "to_v_ip"):
                ip_adapter[f"{2 * number + 1}.{name}.weight"] = getattr(processor, name)[0].weight.detach().cpu()
        return {"image_proj": image_proj, "ip_adapter": ip_adapter}

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """diffusers' ``save_pretrained``, plus the face adapter when one is loaded: its weights in
        ``face_adapter/ip-adapter.safetensors`` (InstantID's layout) and its scales in
        ``model_index.json``, so that ``from_pretrained`` gives back the same pipeline."""
        entry = None
        if isinstance(getattr(self.unet, "encoder_hid_proj", None), MultiIPAdapterImageProjection):
            state = self.face_adapter_state_dict()
            flat = {f"{part}.{key}": value.contiguous() for part, values in state.items() for key, value in values.items()}
            target = Path(save_directory) / FACE_ADAPTER_SUBFOLDER / FACE_ADAPTER_WEIGHTS
            target.parent.mkdir(parents=True, exist_ok=True)
            save_safetensors_atomic(flat, target)
            entry = {"subfolder": FACE_ADAPTER_SUBFOLDER, "weight_name": FACE_ADAPTER_WEIGHTS,
                     "scales": [list(p.scale) for p in self._face_processors().values()]}
        self.register_to_config(**{FACE_ADAPTER_ENTRY: entry})
        with self._face_adapter_set_aside():   # saved once, above, not inside the UNet's weights as well
            super().save_pretrained(save_directory, *args, **kwargs)

    @contextlib.contextmanager
    def _face_adapter_set_aside(self):
        """For the duration of the block the UNet is as it was before the face adapter was loaded."""
        kept, projection = self._face_processors(), self.unet.encoder_hid_proj
        hid_type = self.unet.config.encoder_hid_dim_type
        if kept:
            self.unet.set_attn_processor({**self.unet.attn_processors, **{name: AttnProcessor2_0() for name in kept}})
        self.unet.encoder_hid_proj = None if kept else projection
        self.unet.register_to_config(encoder_hid_dim_type=None if kept else hid_type)
        try:
            yield
        finally:
            self.unet.encoder_hid_proj = projection
            self.unet.register_to_config(encoder_hid_dim_type=hid_type)
            if kept:
                self.unet.set_attn_processor({**self.unet.attn_processors, **kept})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a folder that :meth:`save_pretrained` wrote with a face adapter
        gets it back, weights and scales."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token", "revision") if k in kwargs}
        entry = cls.load_config(pretrained_model_name_or_path, **hub).get(FACE_ADAPTER_ENTRY)
        if entry:
            pipe.load_instantid_adapter(pretrained_model_name_or_path, subfolder=entry["subfolder"],
                                        weight_name=entry["weight_name"], **hub)
            for processor, scale in zip(pipe._face_processors().values(), entry["scales"]):
                processor.scale = list(scale)
        return pipe

    # ------------------------------------------------------------------ attention settings
    @contextlib.contextmanager
    def _face_attention_kept(self):
        """Around a diffusers method that resets every attention processor of the UNet: the face
        adapter's layers get their IP-Adapter processors (weights and scales) back afterwards, and the
        Resampler's own attention layers (inside ``unet.encoder_hid_proj``) their processors."""
        kept = {name: p for name, p in self.unet.attn_processors.items()
                if hasattr(p, "to_k_ip") or name.startswith("encoder_hid_proj.")}
        yield
        if kept:
            self.unet.set_attn_processor({**self.unet.attn_processors, **kept})

    def set_attention_slice(self, slice_size: Optional[int]) -> None:
        """diffusers' attention slicing (``enable_attention_slicing`` / ``disable_attention_slicing``)
        for every attention layer but the face adapter's, which keep their IP-Adapter processors
        (PyTorch's fused attention, lean on memory already)."""
        with self._face_attention_kept():
            super().set_attention_slice(slice_size)

    def fuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        """diffusers' fused QKV projections for every attention layer but the face adapter's, which
        keep their IP-Adapter processors; ``unfuse_qkv_projections`` undoes it."""
        with self._face_attention_kept():
            super().fuse_qkv_projections(unet=unet, vae=vae)

    # ------------------------------------------------------------------ helpers
    def _face_processors(self) -> dict:
        """The UNet's IP-Adapter attention processors (the face adapter's), by name, in UNet order."""
        return {name: p for name, p in self.unet.attn_processors.items() if hasattr(p, "to_k_ip")}

    def _face_resampler(self) -> IPAdapterPlusImageProjection:
        """The face adapter's Resampler, after checking that the adapter is loaded and whole."""
        projection = getattr(self.unet, "encoder_hid_proj", None)
        if not isinstance(projection, MultiIPAdapterImageProjection):
            raise IdgenError("no face adapter loaded; call pipe.load_instantid_adapter('InstantX/InstantID') first")
        resampler = projection.image_projection_layers[0]
        if not isinstance(resampler, IPAdapterPlusImageProjection):
            raise ConfigError(
                f"the loaded IP-Adapter projects with {type(resampler).__name__}, not InstantID's Resampler; "
                "load InstantX/InstantID's ip-adapter.bin with load_instantid_adapter"
            )
        replaced = [name for name, p in self.unet.attn_processors.items()   # cross-attention: attn2, as in diffusers' loader
                    if name.endswith("attn2.processor") and not hasattr(p, "to_k_ip")]
        if replaced:
            raise IdgenError(
                f"{len(replaced)} cross-attention layers of the UNet (e.g. {replaced[0]}) lost the face adapter: "
                "unet.set_default_attn_processor() or unet.set_attn_processor(...) replaced its IP-Adapter "
                "processors and their weights; call pipe.load_instantid_adapter(...) again after changing "
                "attention processors (pipe.enable_attention_slicing() and pipe.fuse_qkv_projections() keep it)"
            )
        return resampler

    def prepare_ip_adapter_image_embeds(self, ip_adapter_image, ip_adapter_image_embeds, device,
                                        num_images_per_prompt, do_classifier_free_guidance):
        """The face embeddings this pipeline hands the parent ``__call__``, kept as they are: they
        already hold one row per generated image (``[negative; positive]`` under classifier-free
        guidance), where diffusers would repeat them for every image, mixing the identities of a
        batch. (The parent passes the number of images of the whole call as
        ``num_images_per_prompt``.)"""
        return [embeds.to(device) for embeds in ip_adapter_image_embeds]

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
        Resampler, computed where its weights are (CPU under model offload) in the UNet's compute
        dtype (not the storage dtype of its weights under layerwise casting)."""
        resampler = self._face_resampler()
        faces = embeddings.to(resampler.proj_in.weight.device, self.unet.dtype)[:, None, :]
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
            return identity_rows(np.stack([face.embedding for face in faces])), faces[0], photos[0]
        return identity_rows(id_embeds), None, None

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
        insightface embedding, 512-d, one row per prompt or one for all; a list of vectors works too)
        — the identity arguments of :class:`Arc2FacePipeline` too. Each prompt's identity is used for
        all ``num_images_per_prompt`` of its images.

        The pose comes from ``keypoints`` (5×2 pixels in the output image), else from the face in
        ``pose_image``, else from the face in the (first) photo; with none of these, ``image`` is used as
        the ready-made keypoint image. With a multi-ControlNet, ``image`` holds the condition images
        of the ControlNets after the IdentityNet. (``image`` here means :attr:`control_image_argument`:
        ``control_image`` in the img2img / inpaint variants.) ``ip_adapter_scale`` applies to this call only
        (``None`` keeps the scale set by ``set_ip_adapter_scale``; the loader sets 0.8). All other
        arguments are those of :class:`~diffusers.StableDiffusionXLControlNetPipeline` (listed in each
        class's signature) but the IP-Adapter image, which is the face. Argument mistakes raise
        ``ValueError``, as in diffusers.
        """
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

        batch_size = prompt_batch_size(prompt, kwargs.get("prompt_embeds"))
        if len(embeddings) not in (1, batch_size):
            raise ValueError(f"{len(embeddings)} identities for {batch_size} prompts; pass one or one per prompt")
        per_image = embeddings.expand(batch_size, -1).repeat_interleave(num_images_per_prompt, dim=0)

        negative, positive = self._face_tokens(per_image)
        guided = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        faces = per_image[:, None, None, :]
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
