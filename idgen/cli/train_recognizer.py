"""``idgen train-recognizer``: train a Face Transformer on an identity-labelled face folder."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-recognizer", help="train a Face Transformer recogniser on <identity>/<image> folders",
        description="Aligns the faces (dlib; cached), splits every identity into train/test images, "
                    "trains the model (optionally distilling a pretrained recogniser, --distill-from) "
                    "and saves config.json + model.safetensors to --out.",
    )
    parser.add_argument("folder", help="face folder, one sub-folder per identity")
    parser.add_argument("--out", required=True, help="output folder for the recogniser")
    parser.add_argument("--preset", default="cpu-small", help="model size: paper, cpu-small, cpu-tiny")
    parser.add_argument("--image-size", type=int, default=None, help="crop size (default: the preset's)")
    parser.add_argument("--align", default="dlib", choices=["dlib", "resize"],
                        help="dlib: detect and align; resize: faces are already cropped")
    parser.add_argument("--min-images", type=int, default=2, help="skip identities with fewer images")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--max-train", type=int, default=None, help="at most this many training images per identity")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cache-dir", default=".cache/faces", help="aligned-crop cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distill-from", metavar="TEACHER",
                        help="also match a pretrained recogniser's embeddings: mobilefacenet:PATH or an ONNX path")
    parser.add_argument("--distill-weight", type=float, default=10.0, help="weight of 1 − cos(student, teacher)")
    parser.add_argument("--distill-images", metavar="FOLDER",
                        help="extra <identity>/<image> photos to distil on; identities that are classes are skipped")
    parser.add_argument("--distill-max-images", type=int, default=0, help="how many extra photos (a seeded draw)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import torch

    from ..recognition import (FaceDataConfig, FaceRecognizer, PRESETS, TrainConfig, load_face_folder,
                               model_config, predict, train_recognizer)
    from ..errors import ConfigError
    from ..recognition.distill import prepare_distillation

    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    size = args.image_size or PRESETS[args.preset]["image_size"]
    data = FaceDataConfig(root=args.folder, align=args.align, image_size=size, min_images_per_class=args.min_images,
                          test_fraction=args.test_fraction, max_train=args.max_train, cache_dir=args.cache_dir)
    train, test = load_face_folder(data)
    extra = None
    if args.distill_from:
        train, extra = prepare_distillation(train, data, args.distill_from, args.distill_images,
                                            args.distill_max_images, args.seed)
    torch.manual_seed(args.seed)
    model = FaceRecognizer(model_config(args.preset, image_size=size, num_classes=len(train.class_names)))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         distill_from=args.distill_from, distill_weight=args.distill_weight)
    log = train_recognizer(model, train, config, extra=extra)
    model.save_pretrained(args.out, train.class_names)
    accuracy = 100.0 * float((predict(model, test) == test.labels).float().mean())
    print(f"{len(train.class_names)} identities, {len(train)} train / {len(test)} test images; "
          f"{model.num_parameters():,} parameters; {log['wall_seconds']:.0f} s; test accuracy {accuracy:.2f} %")
    print(f"saved {args.out}/config.json, model.safetensors")
    return 0
