"""IP-Adapter FaceID on any diffusers pipeline, with faces embedded by :mod:`idgen.faces`.

diffusers loads ``h94/IP-Adapter-FaceID`` itself (``load_ip_adapter(..., image_encoder_folder=None)``,
which also applies the checkpoint's LoRA); all it needs from us is the identity as
``ip_adapter_image_embeds``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from idgen.faces import FaceAnalyzer
from idgen.faces.published import FACE_BACKENDS, warn_if_foreign


def faceid_embeds(analyzer: FaceAnalyzer, images: Sequence, *, do_classifier_free_guidance: bool = True,
                  device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> list[torch.Tensor]:
    """``ip_adapter_image_embeds`` for IP-Adapter FaceID from photos of one person.

    Each photo's largest face is embedded and L2-normalised (FaceID was trained on normalised
    ``buffalo_l`` embeddings: use ``FACE_BACKENDS["faceid"].analyzer()``; another recogniser gets a
    ``UserWarning`` naming that one); every photo
    adds its own 4 identity tokens. Returns ``[tensor]`` of shape ``(2, len(images), D)`` — a zero
    negative then the faces — or ``(1, len(images), D)`` without classifier-free guidance. It is the
    embedding for one prompt; raises :class:`~idgen.errors.NoFaceError` naming a photo without a face.

    >>> pipe = StableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    >>> pipe.load_ip_adapter("h94/IP-Adapter-FaceID", subfolder=None,
    ...                      weight_name="ip-adapter-faceid_sd15.bin", image_encoder_folder=None)
    >>> embeds = faceid_embeds(analyzer, ["me.jpg"], device=pipe.device, dtype=pipe.dtype)
    >>> pipe("a photo of a person in a garden", ip_adapter_image_embeds=embeds).images[0]
    """
    warn_if_foreign(analyzer, FACE_BACKENDS["faceid"], "IP-Adapter FaceID")
    faces = [analyzer.get_face(image) for image in images]
    identity = torch.from_numpy(np.stack([face.normed_embedding for face in faces]).astype(np.float32))[None]
    if do_classifier_free_guidance:
        identity = torch.cat([torch.zeros_like(identity), identity])
    return [identity.to(device=device, dtype=dtype)]
