"""The package as users get it: an sdist and a wheel that carry the bundled model, its card, the sample
images, the napari manifest and the LICENSE, and a wheel that works installed on its own, outside the source
tree (``infosam predict`` on the bundled model).

The build runs without network (``--no-isolation``: setuptools from the running environment) on a copy of the
source files, so the working tree gets no ``build/`` or ``*.egg-info``. The installed wheel is checked in a
fresh virtual environment that sees the running environment's third-party packages (torch, ...) through a
``.pth`` line but not this checkout: a path added by a ``.pth`` line does not have its own ``.pth`` files
processed, so the editable install's import hook stays out, and the test asserts that the code that ran came
from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from infosam_core import resources

REPO = Path(__file__).resolve().parents[1]
SOURCE_ITEMS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "infosam_core", "infosam_app", "resources")
WHEEL_MUST_HOLD = (
    "infosam_resources/models/sam_tiny.safetensors",
    "infosam_resources/models/MODEL_CARD.md",
    "infosam_resources/samples/coins.png",
    "infosam_resources/samples/nuclei_fluorescence_16bit.tif",
    "infosam_app/napari.yaml",
    "infosam_core/cli/predict_cmd.py",
)
SDIST_MUST_HOLD = ("resources/models/sam_tiny.safetensors", "resources/models/MODEL_CARD.md", "LICENSE", "setup.py")


def test_bundled_resources_are_found():
    assert resources.BUNDLED_TINY_CHECKPOINT.is_file()
    assert resources.BUNDLED_TINY_CHECKPOINT.stat().st_size > 1_000_000
    assert (resources.MODELS_DIR / "MODEL_CARD.md").is_file()
    assert sorted(p.name for p in resources.SAMPLES_DIR.glob("*.png"))  # sample images are there


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory) -> Path:
    """An sdist built from a copy of the sources, and a wheel built from that sdist (``python -m build``)."""
    pytest.importorskip("build")
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in SOURCE_ITEMS:
        item = REPO / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=ignore)
        else:
            shutil.copy2(item, source / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


@pytest.mark.slow
def test_sdist_holds_model_and_license(dist_dir):
    with tarfile.open(_one(dist_dir, "*.tar.gz")) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [name for name in SDIST_MUST_HOLD if name not in names]
    assert not missing, f"sdist lacks {missing}"


@pytest.mark.slow
def test_wheel_holds_model_samples_manifest_and_license(dist_dir):
    with zipfile.ZipFile(_one(dist_dir, "*.whl")) as wheel:
        names = set(wheel.namelist())
        licenses = [n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE"]
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    missing = [name for name in WHEEL_MUST_HOLD if name not in names]
    assert not missing, f"wheel lacks {missing}"
    assert licenses, "no LICENSE in the wheel's .dist-info"
    assert "infosam = infosam_core.cli:main" in entry_points
    assert not any(name.startswith(("tests/", "benchmarks/", "resources/")) for name in names)


@pytest.mark.slow
def test_installed_wheel_predicts_outside_the_source_tree(dist_dir, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # torch, segment-anything, ... from the running environment, appended after the venv's own site-packages
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (venv_site / "_running_env.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    wheel = _one(dist_dir, "*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = venv / "bin" / "infosam"
    assert script.is_file(), "the wheel's console script was not installed"

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import infosam_core, infosam_resources; print(infosam_core.__file__); print(infosam_resources.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(venv_site), f"{line} is not from the installed wheel"

    image = resources.SAMPLES_DIR / "coins.png"
    out = work / "mask.png"
    proc = subprocess.run(
        [str(script), "predict", str(image), "--box", "10,10,60,60", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mask = imread(out)
    assert mask.shape == imread(image).shape[:2] and set(np.unique(mask)) <= {0, 255} and mask.any()
