"""Identity-aware photo editing: replace a person's face with another identity, or re-render a photo
while keeping who is in it. Every edit reports the identity similarity it achieved.

>>> from idgen.edit import replace_identity
>>> result = replace_identity("group.jpg", "target.jpg", pipe=pipe, face=1)
>>> result.image.save("edited.png"); result.similarity_to_target
"""

from .editing import EditResult, choose_faces, embedding_at, replace_identity, restyle
from .mask import face_mask

__all__ = ["EditResult", "choose_faces", "embedding_at", "face_mask", "replace_identity", "restyle"]
