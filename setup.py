"""What pyproject.toml cannot say on its own: the top-level ``resources/`` folder (the bundled model, its card
and the sample images) ships inside wheels and sdists as the package ``infosam_resources``. Everything else
about the project is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["infosam_core", "infosam_core.*", "infosam_app", "infosam_app.*"]),
        "infosam_resources",
    ],
    package_dir={"infosam_resources": "resources"},
    package_data={
        "infosam_resources": ["models/*.safetensors", "models/*.json", "models/*.md", "samples/*"],
        "infosam_app": ["napari.yaml"],
    },
)
