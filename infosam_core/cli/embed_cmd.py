"""`infosam embed`: precompute image embeddings into a store that prediction reuses (micro-sam's "precomputed
embeddings").

    infosam embed images/ --out embeddings.zarr                       # the bundled model
    infosam embed a.tif b.tif --model vit_b --checkpoint sam_vit_b.pth --adapter run1/adapter --out emb.zarr
    infosam predict a.tif --box 10,10,80,60 --model vit_b --checkpoint sam_vit_b.pth --embeddings emb.zarr --out m.png

Each image's embedding is stored under its content hash and the model's fingerprint (encoder weights with the
adapter, precision), so ``--embeddings STORE`` in ``predict`` and ``segment`` runs no encoder pass for a stored
image while a different model or adapter computes its own. Run it where the encoder is fast (a GPU) and annotate
elsewhere. Images already stored are skipped; entries are written all or nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument
from infosam_core.cli.common import add_device_argument, add_precision_argument, check_device, check_precision


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="precompute image embeddings into a Zarr store that predict / segment reuse (--embeddings)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="images and/or folders")
    parser.add_argument("--out", type=Path, required=True, metavar="STORE.zarr", help="the store (made if missing)")
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file (.pth or .safetensors) for --model")
    parser.add_argument("--adapter", type=Path, help="adapter saved by `infosam train` or the app")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from infosam_core.adapter_files.loading import load_model_with_adapter
    from infosam_core.annotation.project import find_images
    from infosam_core.annotation.records import ProjectError
    from infosam_core.inference.embedding_store import EmbeddingStore, EmbeddingStoreError
    from infosam_core.inference.predictor import Predictor
    from infosam_core.io.images import ImageError, load_rgb

    check_device(args.device)
    check_precision(args.precision, args.device)
    try:
        images = find_images(args.inputs)
    except ProjectError as exc:
        raise CLIError(str(exc)) from None
    if not images:
        raise CLIError(f"no images found in {', '.join(map(str, args.inputs))} (.png, .jpg, .tif, .bmp)")
    try:
        store = EmbeddingStore(args.out, writable=True)
        sam = load_model_with_adapter(args.model, args.checkpoint, args.adapter, args.device)
    except ValueError as exc:  # EmbeddingStoreError, CheckpointError, PeftCheckpointError, ModelDeviceError
        raise CLIError(str(exc)) from None
    predictor = Predictor(sam, cache_size=0, precision=args.precision, embedding_store=store)
    added = kept = 0
    failed = []
    for path in tqdm(images, desc="embed", unit="image", disable=None):
        try:
            image = load_rgb(path)
        except ImageError as exc:
            failed.append(str(exc))
            continue
        try:
            if store.put(predictor.embed(image)):
                added += 1
            else:
                kept += 1
        except (OSError, EmbeddingStoreError) as exc:
            raise CLIError(f"{args.out}: cannot write the embedding of {path} ({exc})") from None
    print(f"{added} embeddings added, {kept} already stored -> {args.out} ({len(store)} in the store)")
    for message in failed:
        print(f"skipped: {message}")
    return 1 if failed and not added and not kept else 0
