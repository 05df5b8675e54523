"""idgen demo (Gradio). Run ``python app.py``; the full demo is built up in ``idgen.demo``.

For now the page analyses faces: upload a photo and see the detected faces, their five
landmarks, the aligned crops and the identity similarity between two photos.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def draw_faces(image: np.ndarray, faces) -> np.ndarray:
    """The photo with each face's box and five landmarks drawn on it."""
    import cv2

    canvas = image.copy()
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), 2)
        for x, y in face.landmarks:
            cv2.circle(canvas, (int(x), int(y)), 3, (255, 0, 0), -1)
    return canvas


def build_demo(analyzer):
    import gradio as gr

    from idgen.errors import IdgenError
    from idgen.faces import load_image

    def analyse(photo):
        if photo is None:
            raise gr.Error("Upload a photo first.")
        try:
            image = load_image(photo)
            faces = analyzer.analyze(image)
        except IdgenError as exc:
            raise gr.Error(str(exc))
        if not faces:
            raise gr.Error("No face found in this photo; try one where the face is larger.")
        crops = [face.aligned for face in faces]
        return draw_faces(image, faces), crops, f"{len(faces)} face(s) found"

    def compare(first, second):
        if first is None or second is None:
            raise gr.Error("Upload two photos.")
        try:
            a, b = analyzer.get_face(first), analyzer.get_face(second)
        except IdgenError as exc:
            raise gr.Error(str(exc))
        return f"identity similarity (cosine): {float(a.normed_embedding @ b.normed_embedding):.3f}"

    with gr.Blocks(title="idgen") as demo:
        gr.Markdown("# idgen — face analysis")
        with gr.Tab("Analyse"):
            photo = gr.Image(type="filepath", label="photo")
            button = gr.Button("Analyse")
            annotated = gr.Image(label="faces and landmarks")
            crops = gr.Gallery(label="aligned 112×112 crops")
            status = gr.Markdown()
            button.click(analyse, photo, [annotated, crops, status])
        with gr.Tab("Compare"):
            first, second = gr.Image(type="filepath"), gr.Image(type="filepath")
            result = gr.Markdown()
            gr.Button("Compare").click(compare, [first, second], result)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="idgen Gradio demo")
    parser.add_argument("--detector", default=os.environ.get("IDGEN_DETECTOR", "dlib"))
    parser.add_argument("--recognizer", default=os.environ.get("IDGEN_RECOGNIZER", "dlib"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()

    from idgen.faces import FaceAnalyzer

    demo = build_demo(FaceAnalyzer.from_backend(args.detector, args.recognizer))
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
