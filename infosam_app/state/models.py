"""The models the app predicts with: ``base`` (the loaded SAM) and ``adapted`` (a PEFT student).

Each model has its own :class:`~infosam_core.inference.predictor.Predictor` (own embedding cache) and a
:class:`ModelInfo` for the UI; ``active`` names the one prompts are predicted with (the Base / Adapted
toggle). :class:`ModelSet` also remembers which image each predictor holds the embedding of, and which
embeddings are being computed, so that one is never computed twice at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE = "base"
ADAPTED = "adapted"


@dataclass
class ModelInfo:
    """What the UI shows about a model."""

    label: str  # e.g. "tiny (bundled)", "vit_b: sam_vit_b_01ec64.pth", "adapter (lora) run-003"
    device: str  # "CPU" or "GPU (NVIDIA ...)"
    model_type: str
    checkpoint: str | None = None
    adapter_path: str | None = None


def device_name(sam) -> str:
    """Where ``sam``'s weights live, for people: "CPU", "GPU (<name>)", or the device type."""
    try:
        dev = next(sam.parameters()).device
    except StopIteration:
        return "CPU"
    if dev.type == "cuda":
        import torch

        return f"GPU ({torch.cuda.get_device_name(dev)})"
    return "CPU" if dev.type == "cpu" else dev.type.upper()


def make_predictor(sam, cache_dir: Path | None, precision: str = "auto", embedding_store: Any = None):
    """A predictor for ``sam`` with an 8-image memory cache (and a disk cache in ``cache_dir`` if given), its
    encoder in ``precision`` and reading ``embedding_store`` (precomputed embeddings) first if given."""
    from infosam_core.inference.precision import resolve_precision
    from infosam_core.inference.predictor import Predictor

    try:
        resolve_precision(precision, next(sam.parameters()).device)
    except (ValueError, StopIteration):  # e.g. int8 (a CPU kernel) for a model on a GPU: the panel shows "auto"
        precision = "auto"
    return Predictor(sam, cache_size=8, cache_dir=cache_dir, precision=precision, embedding_store=embedding_store)


def load_model_and_predictor(
    model_type: str,
    checkpoint: str | None,
    cache_dir: Path | None,
    precision: str = "auto",
    embedding_store: Any = None,
):
    """Load SAM (on the GPU when there is one) and make its predictor; slow, so run it in a background task.
    The core's :func:`~infosam_core.adapter_files.loading.load_model_with_adapter` raises ValueErrors only."""
    from infosam_core.adapter_files.loading import load_model_with_adapter

    sam = load_model_with_adapter(model_type, checkpoint, adapter=None, device="auto")
    return sam, make_predictor(sam, cache_dir, precision, embedding_store)


def origin_label(model_type: str, checkpoint: str | None) -> str:
    """``"tiny (bundled)"``, ``"vit_b (sam_vit_b_01ec64.pth)"`` or ``"vit_b (random weights)"``."""
    if model_type == "tiny" and not checkpoint:
        origin = "bundled"
    else:
        origin = Path(checkpoint).name if checkpoint else "random weights"
    return f"{model_type} ({origin})"


EmbeddingJob = tuple[str, int, str]  # (model name, id(predictor), image key)


class ModelSet:
    """The base and adapted models, their predictors and labels, the active one, and embedding bookkeeping."""

    def __init__(self) -> None:
        self.sams: dict[str, Any] = {}
        self.predictors: dict[str, Any] = {}
        self.infos: dict[str, ModelInfo] = {}
        self.active = BASE
        self._embedded: dict[str, tuple[str, int]] = {}  # model name -> (image key, id(predictor))
        self._jobs: set[EmbeddingJob] = set()

    # ------------------------------------------------------------------------------------------ models
    def install_base(self, sam, predictor, info: ModelInfo) -> None:
        """``sam`` becomes the base model and the active one; an adapted model is dropped."""
        self.sams = {BASE: sam}
        self.predictors = {BASE: predictor}
        self.infos = {BASE: info}
        self.active = BASE
        self._embedded.clear()

    def install_adapted(self, sam, predictor, info: ModelInfo, activate: bool = True) -> None:
        """``sam`` becomes the adapted model (replacing an earlier one); active if ``activate``."""
        self.sams[ADAPTED] = sam
        self.predictors[ADAPTED] = predictor
        self.infos[ADAPTED] = info
        self._embedded.pop(ADAPTED, None)
        if activate:
            self.active = ADAPTED

    def drop_adapted(self) -> bool:
        """Forget the adapted model (e.g. another project is opened); False when there was none."""
        if ADAPTED not in self.sams and ADAPTED not in self.predictors:
            return False
        for d in (self.sams, self.predictors, self.infos, self._embedded):
            d.pop(ADAPTED, None)  # type: ignore[attr-defined]
        self.active = BASE
        return True

    def activate(self, name: str) -> bool:
        """Make ``name`` the active model; False (and nothing changes) if it is unknown or already active."""
        if name not in self.predictors or name == self.active:
            return False
        self.active = name
        return True

    @property
    def predictor(self):
        """The active model's predictor (None before a model is loaded)."""
        return self.predictors.get(self.active)

    @property
    def has_adapted(self) -> bool:
        return ADAPTED in self.predictors

    @property
    def base_info(self) -> ModelInfo | None:
        return self.infos.get(BASE)

    def set_cache_dir(self, cache_dir: Path | None) -> None:
        """Point every predictor's disk cache at ``cache_dir`` (a project's) and forget what was embedded."""
        for predictor in self.predictors.values():
            predictor.cache_dir = cache_dir
        self._embedded.clear()

    def set_precision(self, precision: str) -> None:
        """Run every predictor's encoder in ``precision`` from now on (ValueError, nothing changed, when one
        cannot). Their current images are unset and forgotten: the caller re-embeds in the background (the
        cache keeps each precision's embeddings apart)."""
        from infosam_app.state.inference_options import check_precision_for

        check_precision_for(self.predictors, precision)
        for predictor in self.predictors.values():
            predictor.reset_image()  # so that set_precision does not run the encoder here (the GUI thread)
            predictor.set_precision(precision)
        self._embedded.clear()

    def set_embedding_store(self, store: Any) -> None:
        """Every predictor reads ``store`` (precomputed embeddings; None: none) before any encoder pass."""
        for predictor in self.predictors.values():
            predictor.embedding_store = store

    # ------------------------------------------------------------------------------------------ embeddings
    def is_embedded(self, name: str, key: str | None) -> bool:
        """True when model ``name``'s current predictor holds the embedding of image ``key``."""
        predictor = self.predictors.get(name)
        return predictor is not None and key is not None and self._embedded.get(name) == (key, id(predictor))

    def mark_embedded(self, name: str, key: str, predictor) -> None:
        self._embedded[name] = (key, id(predictor))

    def forget_embeddings(self, clear_caches: bool = False) -> None:
        """Forget which images are embedded; with ``clear_caches`` also empty the predictors' memory caches."""
        self._embedded.clear()
        if clear_caches:
            for predictor in self.predictors.values():
                predictor.clear_cache()

    def start_job(self, name: str, key: str) -> EmbeddingJob | None:
        """Register the embedding of ``key`` by model ``name``; None if that very job is already running."""
        job = (name, id(self.predictors[name]), key)
        if job in self._jobs:
            return None
        self._jobs.add(job)
        return job

    def end_job(self, job: EmbeddingJob) -> None:
        self._jobs.discard(job)

    def is_current(self, name: str, predictor) -> bool:
        """True while ``predictor`` is still model ``name``'s (a hot swap replaces it)."""
        return self.predictors.get(name) is predictor
