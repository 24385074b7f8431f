"""`infosam app`: start napari with the InfoSAM Studio widget docked.

    infosam app [--samples] [--project DIR] [IMAGES/FOLDERS ...] [--model tiny|vit_b|vit_l|vit_h --checkpoint F]

Without ``--project``, images go into a project in the user data folder
(``~/.local/share/infosam-studio/projects/<name>`` on Linux), never into the working directory.
This module imports neither napari nor torch until the command runs (``infosam --help`` stays fast).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from infosam_app.gl_safety import import_triton_first
from infosam_core.cli import add_model_argument


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "app",
        help="start the napari app (click to segment, adapt SAM to your objects)",
        description="Start InfoSAM Studio in napari. Accepted objects are saved at once in the project folder.",
    )
    p.add_argument("images", nargs="*", type=Path, help="image files or folders to open (PNG, JPEG, TIFF)")
    p.add_argument("--samples", action="store_true", help="open the bundled sample images")
    p.add_argument("--project", type=Path, help="project folder to open or create (default: in the user data folder)")
    add_model_argument(p)
    p.add_argument("--checkpoint", type=Path, help="model checkpoint file (SAM, SAM2, MobileSAM, HQ-SAM)")
    p.set_defaults(func=run)
    return p


def launch(
    images: Sequence[str | Path] = (),
    project: str | Path | None = None,
    samples: bool = False,
    model: str = "tiny",
    checkpoint: str | Path | None = None,
    show: bool = True,
):
    """Create a viewer with the studio docked and open what was asked; returns ``(viewer, widget)``."""
    import_triton_first()
    import napari

    from infosam_app.samples import sample_paths, samples_project_dir
    from infosam_app.widget import StudioWidget

    viewer = napari.Viewer(title="InfoSAM Studio", show=show)
    widget = StudioWidget(viewer, model_type=model, checkpoint=str(checkpoint) if checkpoint else None)
    viewer.window.add_dock_widget(widget, name="InfoSAM Studio", area="right")
    session = widget.session
    if project is not None:
        session.open_project(project, create=True)
    elif samples:
        session.open_project(samples_project_dir(), create=True, name="samples")
    if samples:
        session.add_images(sample_paths(), project_hint="samples")
    if images:
        session.add_images(list(images))
    return viewer, widget


def run(args: argparse.Namespace) -> int:
    from infosam_core.cli import CLIError

    import_triton_first()
    try:
        import napari
    except ImportError:
        raise CLIError("the app needs napari and Qt: pip install 'infosam-studio[app]'") from None
    from infosam_app.qt_safety import current_binding_problem

    problem = current_binding_problem()
    if problem is not None:
        raise CLIError(problem)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CLIError(f"{args.checkpoint}: checkpoint file not found")
    for p in args.images:
        if not p.exists():
            raise CLIError(f"{p}: no such file or folder")
    if args.project is not None and args.project.exists() and not args.project.is_dir():
        raise CLIError(f"{args.project}: is a file, not a project folder")
    launch(args.images, args.project, args.samples, args.model, args.checkpoint)
    napari.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m infosam_app`: the same options as `infosam app`."""
    from infosam_core.cli import main as core_main

    return core_main(["app", *(sys.argv[1:] if argv is None else argv)])
