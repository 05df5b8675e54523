"""Head pose (yaw, pitch, roll in degrees) from a face's five landmarks, by a PnP fit to a generic 3-D face.

The generic face is the six-point model of S. Mallick's "Head Pose Estimation using OpenCV and Dlib"
(LearnOpenCV, 2016), which is widely used with ``cv2.solvePnP``: nose tip (0, 0, 0), outer eye
corners (∓225, 170, −135), mouth corners (∓150, −150, −125), in units of about 0.2 mm (y up, z towards
the viewer). The five ArcFace points need eye *centres*: they sit at x = ∓157 (an interpupillary
distance of 63 mm, the adult mean, at that scale) at the height and depth of the eye corners. Here
the model is written in the camera's axes (x right, y down, z away from the camera).

Sign convention (what a user of :attr:`idgen.faces.Face.pose` reads):

- **yaw** > 0: the face is turned to the subject's left (the nose moves towards the image's right);
- **pitch** > 0: the face is tilted up (chin up; the nose moves towards the top of the image);
- **roll** > 0: the head is tilted counter-clockwise as the image is shown (the top of the head
  towards the image's left), the direction of ``PIL.Image.rotate``'s angle: rotating a photo by θ
  degrees with ``Image.rotate(θ)`` adds about θ to the roll.

A mirrored photo therefore gives −yaw, the same pitch and −roll. The rotation is decomposed as
``R = Rz(roll) · Rx(pitch) · Ry(yaw)`` (roll outermost, so an in-plane rotation of the image changes
roll alone). The camera is a pinhole with focal length the image's longer side, centred, no
distortion. Five points fit six unknowns only loosely: pitch is the least certain of the three
(its lever is the small depth of the nose); treat poses as good to several degrees.
"""

from __future__ import annotations

import numpy as np

#: The generic 3-D face (camera axes: x right, y down, z away from the camera), in the order of the
#: five ArcFace landmarks: image-left eye, image-right eye, nose tip, image-left and image-right mouth corner.
GENERIC_FACE_5 = np.array([
    [-157.0, -170.0, 135.0],
    [157.0, -170.0, 135.0],
    [0.0, 0.0, 0.0],
    [-150.0, 150.0, 125.0],
    [150.0, 150.0, 125.0],
])


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a face with these five landmarks (5×2 pixels, ArcFace
    order) in an image of ``image_size = (height, width)``; signs as in the module's docstring."""
    import cv2

    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    height, width = image_size
    focal = float(max(height, width))
    camera = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    # start frontal at the distance where the model's eye span matches the landmarks' eye span, so the
    # iterative fit starts in the right basin (five points admit a second, mirrored-depth solution)
    eye_span = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    distance = focal * (GENERIC_FACE_5[1, 0] - GENERIC_FACE_5[0, 0]) / eye_span
    centre = (points[2] - camera[:2, 2]) * distance / focal
    rvec = np.zeros((3, 1))
    tvec = np.array([[centre[0]], [centre[1]], [distance]])
    _, rvec, _ = cv2.solvePnP(GENERIC_FACE_5, points, camera, None, rvec, tvec, useExtrinsicGuess=True,
                              flags=cv2.SOLVEPNP_ITERATIVE)
    return euler_angles(cv2.Rodrigues(rvec)[0])


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a model-to-camera rotation matrix ``Rz(r)·Rx(p)·Ry(y)``,
    with the signs of the module's docstring (which flips all three from the right-handed camera axes)."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.degrees(np.arctan2(-r[2, 0], r[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(r[2, 1], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(-r[0, 1], r[1, 1]))
    return -float(yaw), -float(pitch), -float(roll)
