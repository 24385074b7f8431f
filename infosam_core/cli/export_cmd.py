"""`infosam export`: a project's objects as label images and / or one COCO file, as the app's Export panel does.

    infosam export myproject --out labels/                              # <image>_labels.tif, every object its id
    infosam export myproject --out labels/ --layout per_category        # one label image per category
    infosam export myproject --out labels/ --layout semantic --format png
    infosam export myproject --coco annotations.json                    # COCO with the project's categories
    infosam export myproject --out labels/ --coco labels/coco.json --only-annotated

The project is opened read-only (no lock is taken: the app may keep it open). Label images are written into
``--out`` (created if missing) with names from the images' own; the COCO file is written atomically. A project's
stacks with 3D objects are written as ``<stack>_labels.tif`` volumes with the stack's shape (not in COCO).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infosam_core.cli import CLIError, defer_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a project's objects as label images and / or COCO",
        description=__doc__.split("\n\n")[0],
    )
    defer_arguments(parser, _add_arguments)  # the export module imports torch: only for `export`
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.annotation.export import LABEL_FORMATS, LABEL_LAYOUTS

    parser.add_argument("project", type=Path, metavar="PROJECT", help="project folder")
    parser.add_argument("--out", type=Path, help="folder for the label images")
    parser.add_argument("--coco", type=Path, metavar="FILE", help="write the objects as one COCO .json file")
    parser.add_argument("--format", choices=LABEL_FORMATS, default="tif", help="label image format (default tif)")
    parser.add_argument(
        "--layout",
        choices=LABEL_LAYOUTS,
        default="instances",
        help="instances (default): each object its id; per_category: one label image per category; semantic: "
        "each object's pixels its category id",
    )
    parser.add_argument(
        "--only-annotated", action="store_true", help="skip images without objects (label images: default all)"
    )


def run(args: argparse.Namespace) -> int:
    from infosam_core.annotation.export import ExportError, export_coco, export_label_images
    from infosam_core.annotation.records import ProjectError

    if args.out is None and args.coco is None:
        raise CLIError("nothing to export: give --out DIR (label images), --coco FILE, or both.")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out}: is a file; give a folder for the label images.")
    if args.coco is not None and (args.coco.is_dir() or args.coco.suffix.lower() != ".json"):
        raise CLIError(f"--coco {args.coco}: give the path of a .json file to write.")
    try:
        from infosam_core.annotation.project import Project

        project = Project.open(args.project, read_only=True)
        if args.out is not None:
            written = export_label_images(
                project, args.out, fmt=args.format, only_annotated=args.only_annotated, layout=args.layout
            )
            print(f"{len(written)} label image{'s' if len(written) != 1 else ''} ({args.layout}) -> {args.out}")
            from infosam_core.annotation.stack_objects import export_stack_labels

            volumes = export_stack_labels(project, args.out)  # 3D objects: one (N, Y, X) label TIFF per stack
            if volumes:
                print(f"{len(volumes)} 3D label volume{'s' if len(volumes) != 1 else ''} (stacks) -> {args.out}")
        if args.coco is not None:
            args.coco.parent.mkdir(parents=True, exist_ok=True)
            export_coco(project, args.coco)
            print(f"{project.total_objects()} objects in {len(project.categories)} categories -> {args.coco}")
    except (ProjectError, ExportError) as exc:
        raise CLIError(str(exc)) from None
    return 0
