"""`infosam import`: bring existing annotations into a project (created if missing), all or nothing.

    infosam import myproject --images cells/ --labels cellpose_masks/            # instance label images
    infosam import myproject --images cells/ --labels masks/ --kind masks        # binary masks: components
    infosam import myproject --images cells/ --labels annotations.json           # COCO (several categories)
    infosam import myproject --images cells/ --labels nuclei/ --category nucleus

A label file belongs to the image with the same stem, optionally followed by _labels, _label, _masks, _mask,
_cp_masks (``img.png`` <- ``img.tif`` / ``img_labels.tif`` / ``img_masks.png``); a COCO image by its
``file_name``. Every object becomes a project object (its bounding box as its prompt); a label file that matches
no image, sizes that differ, an empty mask or overlapping COCO masks stop the import with one message and
leave the project unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infosam_core.cli import CLIError, defer_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="import label images, binary masks or COCO into a project",
        description=__doc__.split("\n\n")[0],
    )
    defer_arguments(parser, _add_arguments)  # the importing module imports torch: only for `import`
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.annotation.importing import IMPORT_KINDS

    parser.add_argument("project", type=Path, metavar="PROJECT", help="project folder (created if it holds none)")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="folder(s) or files of the images")
    parser.add_argument("--labels", type=Path, required=True, help="folder of label images / masks, or a COCO .json")
    parser.add_argument(
        "--kind",
        choices=IMPORT_KINDS,
        default="auto",
        help="labels: instance label images; masks: binary masks (connected components, or a sub-folder per "
        "image with one mask per file); coco; auto (default): from what --labels holds",
    )
    parser.add_argument("--category", help="category of the imported label images' objects (COCO: from the file)")


def run(args: argparse.Namespace) -> int:
    from infosam_core.annotation.importing import commit_import, read_labels
    from infosam_core.annotation.project import MANIFEST_NAME, Project, find_images
    from infosam_core.annotation.records import ProjectError

    try:
        images = find_images(args.images)
        items, categories = read_labels(images, args.labels, args.kind, args.category)  # checked before writing
        created = not (args.project / MANIFEST_NAME).is_file()
        project = Project.open_or_create(args.project)
        summary = commit_import(project, items, categories)
    except ProjectError as exc:
        raise CLIError(str(exc)) from None
    print(f"{project.root}: {summary.describe()}" + (" (new project)" if created else ""))
    return 0
