"""Old name of the face-set readers, now in :mod:`idgen.recognition.data`."""

from ..recognition.data import (ALIGNMENTS, FORMATS, LabelledImages, align_images, read_face_set,  # noqa: F401
                                read_parquet, read_webdataset)
