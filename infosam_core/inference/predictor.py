"""Interactive prediction: segment-anything's ``SamPredictor`` interface, plus embedding caching and model swaps.

:class:`Predictor` keeps SamPredictor's calling convention and results (``set_image``, ``predict``,
``predict_torch``, ``get_image_embedding``, ``transform``, ...; the parity tests compare it with
segment-anything's): the same resize (:class:`~infosam_core.models.transforms.ResizeLongestSide`),
normalisation, prompt transforms and mask post-processing. It does not derive from ``SamPredictor``, whose
module imports torchvision (see :mod:`infosam_core.segment_anything_import`). On top of it:

* ``set_image`` accepts any image :func:`infosam_core.io.images.to_rgb_uint8` accepts (gray, RGBA,
  16-bit, float, ...).
* Image embeddings are cached (:class:`~infosam_core.inference.embedding_cache.EmbeddingCache`) under
  ``key = sha256(image) + model_fingerprint(sam.image_encoder)`` (+ the encoder blocks a decoder such as
  HQ-SAM's reads, whose outputs are cached with the embedding: ``backends.embedding_fingerprint``): in memory
  (LRU, ``cache_size`` entries) and optionally on disk (``cache_dir``). Because the key hashes the encoder's
  actual weights, an adapted or swapped encoder never reuses a stale embedding.
* A precomputed embedding store (``embedding_store``, :mod:`~infosam_core.inference.embedding_store`, filled by
  ``infosam embed``) is read after the caches and before any encoder pass.
* ``precision`` (``auto``, ``float32``, ``bfloat16``, ``int8``; :mod:`~infosam_core.inference.precision`): the
  encoder pass's precision; embeddings of each precision are cached apart (the fingerprint gets ``_bf16`` /
  ``_int8``). ``auto`` is bfloat16 where the hardware multiplies it natively, else float32.
* ``embed(image) -> ImageEmbedding`` may run in a worker thread while the owning (GUI) thread keeps
  predicting on the current image; ``set_embedding`` then shows the result.
* ``set_model(sam)`` swaps the model and re-embeds the current image (or takes it from the cache).
* Stock segment-anything decoders run as :class:`infosam_core.models.interactive_decoder.InteractiveDecoder`:
  the same outputs to float32 rounding (masks identical in the parity tests) in about half the time per
  prompt, because the image's share of the decoder's work is done once per image.

Weights changing in place. The fingerprint is computed once per model, and recomputed when a cheap
check (the identity, storage and version counter of every encoder tensor) says the encoder's weights
may have changed -- e.g. after an optimizer step or ``load_state_dict``. That check runs on every
``set_image`` / ``embed``, not on ``predict``: after changing weights in place, call
:meth:`Predictor.refresh_model` so that the current image is re-embedded with them.

Threads. ``embed`` (and the cache) may be used from any thread. ``set_image``, ``set_embedding``,
``predict``, ``set_model`` and ``refresh_model`` belong to the thread that owns the predictor. Encoder
passes and model swaps are serialised by one lock; ``predict``, ``set_embedding`` and cache hits do not
wait for a worker's encoder pass (``set_model`` does).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from infosam_core.inference.backends import Backend, backend_for, embedding_fingerprint
from infosam_core.inference.embedding_cache import EmbeddingCache, ImageEmbedding, image_hash
from infosam_core.inference.embedding_store import EmbeddingStore
from infosam_core.inference.precision import (
    FINGERPRINT_TAGS,
    as_float32,
    check_precision,
    encoder_context,
    quantized_copy,
    resolve_precision,
)
from infosam_core.io.images import to_rgb_uint8
from infosam_core.models.decoder_features import decoder_encoder_blocks
from infosam_core.models.fingerprint import weights_stamp
from infosam_core.models.interactive_decoder import InteractiveDecoder
from infosam_core.models.interactive_decoder import supports as interactive_decoder_supports
from infosam_core.models.protocols import SamLike
from infosam_core.models.sam import SamBackend

logger = logging.getLogger(__name__)


POINT_LABELS = (0, 1)  # what callers give: 1 foreground, 0 background (SAM's -1/2/3 are internal)


class Predictor:
    """SamPredictor's interface with cached, thread-safe embeddings and model hot swap (see the module docstring)."""

    # SamPredictor's state: the model and the current image's
    model: SamLike
    is_image_set: bool
    features: torch.Tensor | None
    original_size: tuple[int, ...] | None
    input_size: tuple[int, ...] | None

    def __init__(
        self,
        sam: SamLike,
        cache_size: int = 8,
        cache_dir: str | Path | None = None,
        use_interactive_decoder: bool = True,
        precision: str = "auto",
        embedding_store: EmbeddingStore | None = None,
    ) -> None:
        check_precision(precision)
        self.cache = EmbeddingCache(cache_size, cache_dir)
        #: precomputed embeddings (``infosam embed``) read before any encoder pass; None: none
        self.embedding_store = embedding_store
        #: run stock SAM decoders as :class:`InteractiveDecoder` (False: call ``sam.mask_decoder`` as is)
        self.use_interactive_decoder = use_interactive_decoder
        self._lock = threading.RLock()  # the model: held during encoder passes and swaps
        self._fingerprint_lock = threading.RLock()  # short: the fingerprint and its weights stamp
        self._embedding: ImageEmbedding | None = None
        self.model = sam
        self.reset_image()
        self._backend = backend_for(sam)  # what differs per backbone family (SAM, SAM2)
        self.transform = self._backend.transform
        self._decoder = _interactive_decoder(sam)
        self._fingerprint = embedding_fingerprint(sam)
        self._stamp = weights_stamp(sam.image_encoder)
        self._precision = precision
        self._resolved_precision = resolve_precision(precision, self.device)
        self._int8_backend: tuple[str, Backend] | None = None  # (base fingerprint, backend of the int8 copy)

    # ------------------------------------------------------------------------------------- precision
    @property
    def precision(self) -> str:
        """The precision asked for (``auto``, ``float32``, ``bfloat16``, ``int8``; see ``inference.precision``)."""
        return self._precision

    @property
    def resolved_precision(self) -> str:
        """The precision encoder passes run in (``auto`` resolved for this model's device)."""
        return self._resolved_precision

    def set_precision(self, precision: str) -> None:
        """Run encoder passes in ``precision`` from now on; the current image is re-embedded (or taken from the
        cache: embeddings of each precision are cached apart)."""
        resolved = resolve_precision(precision, self.device)
        with self._lock, self._fingerprint_lock:
            self._precision, self._resolved_precision = precision, resolved
        if self._embedding is not None and self._embedding.model_fingerprint != self.model_fingerprint:
            self._reembed_current()

    # ----------------------------------------------------------------------------------------- model
    @property
    def model_fingerprint(self) -> str:
        """Fingerprint of the current encoder's weights (recomputed if they may have changed)."""
        with self._fingerprint_lock:
            stamp = weights_stamp(self.model.image_encoder)
            if stamp != self._stamp:
                self._fingerprint = embedding_fingerprint(self.model)
                self._stamp = stamp
            return self._fingerprint + FINGERPRINT_TAGS[self._resolved_precision]

    def set_model(self, sam: SamLike) -> None:
        """Use ``sam`` from now on. The current image stays set, re-embedded by ``sam`` (or from the cache).

        An image set with ``set_torch_image`` (no RGB image kept) is unset instead.
        """
        fingerprint, stamp = embedding_fingerprint(sam), weights_stamp(sam.image_encoder)
        with self._lock, self._fingerprint_lock:
            self.model = sam
            self._backend = backend_for(sam)
            self._decoder = _interactive_decoder(sam)
            self.transform = self._backend.transform
            self._fingerprint, self._stamp = fingerprint, stamp
            self._resolved_precision = resolve_precision(self._precision, self.device)
            self._int8_backend = None
        self._reembed_current()

    def refresh_model(self) -> str:
        """Recompute the fingerprint from the weights now, and re-embed the current image if it changed.

        Call this after changing the model's weights in place (training, loading an adapter) so that
        ``predict`` uses them. Returns the new fingerprint.
        """
        with self._fingerprint_lock:
            self._fingerprint = embedding_fingerprint(self.model)
            self._stamp = weights_stamp(self.model.image_encoder)
        fingerprint = self.model_fingerprint
        if self._embedding is not None and self._embedding.model_fingerprint != fingerprint:
            self._reembed_current()
        return fingerprint

    def _reembed_current(self) -> None:
        image = self._embedding.image if self._embedding is not None else None
        if image is None:
            self.reset_image()
        else:
            self.set_embedding(self.embed(image, image_format=self.model.image_format))

    def fork(self) -> Predictor:
        """A predictor for another thread: same model, cache and locks, its own current image and decoder state.

        ``embed`` is thread-safe but ``set_image`` / ``predict`` belong to the owning thread; a worker
        (e.g. automatic segmentation in the app) forks the GUI's predictor and predicts on the fork while
        the GUI keeps prompting on the original. The fork starts with no image set.
        """
        other = copy.copy(self)
        other._decoder = _interactive_decoder(self.model)
        other.features = None
        other.is_image_set = False
        other.original_size = other.input_size = None
        other._embedding = None
        return other

    # ------------------------------------------------------------------------------------ embeddings
    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding:
        """The embedding of ``image`` (any array ``to_rgb_uint8`` accepts), from the cache or the encoder.

        Thread-safe; does not change what this predictor shows (use ``set_embedding`` for that).
        """
        rgb, digest = self._model_rgb(image, image_format)
        embedding = self.cache.get(f"{digest}-{self.model_fingerprint}", self.device)
        if embedding is None:
            computed = False
            with self._lock:
                key = f"{digest}-{self.model_fingerprint}"  # the model may have been swapped meanwhile
                embedding = self.cache.get(key, self.device)  # or another thread may just have computed it
                if embedding is None and self.embedding_store is not None:
                    embedding = self.embedding_store.get(key, self.device)
                if embedding is None:
                    embedding, computed = self._encode(rgb, key), True
            if computed:
                self.cache.put_disk(embedding)
        self.cache.put_memory(embedding)
        return replace(embedding, image=rgb)

    def has_in_memory(self, image: np.ndarray, image_format: str = "RGB") -> bool:
        """Whether ``image``'s embedding by the current model is in the memory cache (``embed`` would cost
        neither an encoder pass nor a disk read)."""
        _, digest = self._model_rgb(image, image_format)
        return self.cache.in_memory(f"{digest}-{self.model_fingerprint}")

    def _model_rgb(self, image: np.ndarray, image_format: str) -> tuple[np.ndarray, str]:
        """``image`` as the model's contiguous uint8 RGB (or BGR) array, and its hash."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        rgb = to_rgb_uint8(image)
        if image_format != self.model.image_format:
            rgb = rgb[..., ::-1]
        rgb = np.ascontiguousarray(rgb)
        return rgb, image_hash(rgb)

    def _encode(self, rgb: np.ndarray, key: str) -> ImageEmbedding:
        """One encoder pass with the model family's own resize and preprocess, in the resolved precision
        (caller holds the lock); the features are returned in float32."""
        backend = self._encoder_backend()
        with torch.inference_mode(), encoder_context(self._resolved_precision, self.device):
            features, extra, input_size = backend.encode(rgb)
        features, extra = as_float32(features), tuple(as_float32(t) for t in extra)
        return ImageEmbedding(features, (rgb.shape[0], rgb.shape[1]), input_size, key, extra_features=extra)

    def _encoder_backend(self) -> Backend:
        """The backend whose encoder runs: the model's own, or for int8 its quantized copy (made once per weights)."""
        if self._resolved_precision != "int8":
            return self._backend
        base = self.model_fingerprint
        if self._int8_backend is None or self._int8_backend[0] != base:
            self._int8_backend = (base, backend_for(cast(SamLike, quantized_copy(cast(torch.nn.Module, self.model)))))
        return self._int8_backend[1]

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Show ``embedding`` (from ``embed``): ``predict`` then segments its image.

        Raises ValueError if it was computed by another model than the current one.
        """
        if embedding.model_fingerprint != self.model_fingerprint:
            raise ValueError(
                "this embedding was computed by another model (or other weights) than the current one; "
                "compute it again with embed()"
            )
        self._unset_image()
        self.features = embedding.features
        self.extra_features = embedding.extra_features
        self.original_size = embedding.original_size
        self.input_size = embedding.input_size
        self.is_image_set = True
        self._embedding = embedding

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed ``image`` (from the cache when possible) and make it the current image.

        Arguments:
          image: (H, W), (H, W, C) with C in 1-4, any numeric dtype (see ``images.to_rgb_uint8``).
          image_format: channel order of a colour ``image``, 'RGB' or 'BGR'.
        """
        self.set_embedding(self.embed(image, image_format))

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """SamPredictor's: embed an already resized (1, 3, h, w) tensor (not cached; segment-anything models)."""
        if not isinstance(self._backend, SamBackend):
            raise NotImplementedError("set_torch_image is for segment-anything models; use set_image")
        blocks = decoder_encoder_blocks(self.model.mask_decoder)
        with self._lock, torch.inference_mode():
            size = self.model.image_encoder.img_size
            if (
                transformed_image.ndim != 4
                or transformed_image.shape[1] != 3
                or max(transformed_image.shape[2:]) != size
            ):
                raise ValueError(f"set_torch_image input must be BCHW with long side {size}.")
            self.reset_image()
            self.original_size = original_image_size
            self.input_size = tuple(transformed_image.shape[-2:])
            input_image = self.model.preprocess(transformed_image)
            if blocks:  # a decoder that reads encoder blocks (HQ-SAM): their outputs are captured too
                self.features, self.extra_features = self._backend.encode_input(input_image)
            else:
                self.features = self.model.image_encoder(input_image)
            self.is_image_set = True

    def reset_image(self) -> None:
        """Unset the current image."""
        self._unset_image()
        self._embedding = None
        decoder = getattr(self, "_decoder", None)  # unset while __init__ resets the image
        if decoder is not None:
            decoder.clear()  # it holds the image's decoder inputs (~14 MB at SAM size)

    def _unset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.extra_features = ()
        self.original_size = None
        self.input_size = None

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.model.device

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding (1, C, h, w), e.g. (1, 256, 64, 64) for SAM."""
        features, _, _ = self._sizes()
        return features

    @property
    def embedding(self) -> ImageEmbedding | None:
        """The current image's embedding (None when none is set or it came from ``set_torch_image``)."""
        return self._embedding

    def clear_cache(self) -> None:
        """Forget the in-memory cache (files in ``cache_dir`` are kept)."""
        self.cache.clear()

    @property
    def cache_dir(self) -> Path | None:
        """Folder of the on-disk embedding cache (None: memory only); may be changed at any time."""
        return self.cache.cache_dir

    @cache_dir.setter
    def cache_dir(self, folder: str | Path | None) -> None:
        self.cache.cache_dir = Path(folder) if folder is not None else None

    # ------------------------------------------------------------------------------------ prediction
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SamPredictor.predict, with the prompts checked first (ValueError on bad shapes or values).

        Arguments (pixels of the original image):
          point_coords: (N, 2) as (x, y); point_labels: (N,), 1 foreground, 0 background.
          box: (4,) XYXY. mask_input: (1, h, w) low-res logits from a previous call (h = w = 256 for
          SAM, 128 for tiny).
        Returns:
          masks (C, H, W) bool (float logits if ``return_logits``), scores (C,), low-res logits
          (C, h, w); C = 3 with ``multimask_output``, else 1.
        """
        _, _, original_size = self._sizes()
        coords, labels, box_array, mask = self._check_prompts(point_coords, point_labels, box, mask_input)
        device = self.device
        coords_torch = labels_torch = box_torch = mask_torch = None
        if coords is not None and labels is not None:
            coords_torch = torch.as_tensor(self.transform.apply_coords(coords, original_size), dtype=torch.float)
            labels_torch = torch.as_tensor(labels, dtype=torch.int)
            coords_torch, labels_torch = coords_torch.to(device)[None], labels_torch.to(device)[None]
        if box_array is not None:
            box_torch = torch.as_tensor(self.transform.apply_boxes(box_array, original_size), dtype=torch.float)
            box_torch = box_torch.to(device)[None]
        if mask is not None:
            mask_torch = torch.as_tensor(mask, dtype=torch.float).to(device)[None]
        masks, scores, low_res = self.predict_torch(
            coords_torch, labels_torch, box_torch, mask_torch, multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), scores[0].cpu().numpy(), low_res[0].cpu().numpy()

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SamPredictor.predict_torch (batched, already transformed prompts), under inference mode.

        With segment-anything's stock mask decoder the decoder runs as :class:`InteractiveDecoder`
        (same outputs to float32 rounding; the image's share of the work is done once per image).
        """
        with torch.inference_mode():
            low_res_masks, iou_predictions = self.predict_low_res_torch(
                point_coords, point_labels, boxes, mask_input, multimask_output
            )
            if isinstance(self._backend, SamBackend):
                masks = self.upscale_logits(low_res_masks)
            else:  # SAM2's predictor also returns its low-res logits clamped
                _, input_size, original_size = self._sizes()
                masks, low_res_masks = self._backend.postprocess(low_res_masks, input_size, original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            return masks, iou_predictions, low_res_masks

    def predict_low_res_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        keep_prompts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's low-resolution logits and predicted IoUs for batched, transformed prompts (the first half
        of ``predict_torch``): filters that need only the IoUs run before any mask is brought to the image's
        size (:meth:`upscale_logits`, the second half). With ``keep_prompts`` (IoUs (B, M) -> (B,) bool) the
        logits are those of the prompts it keeps only, in order (the stock decoder then skips the others'
        upscaling); the IoUs are every prompt's."""
        features, _, _ = self._sizes()
        if point_coords is not None and point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
        with torch.inference_mode():
            decoder = self._decoder if self.use_interactive_decoder else None
            points = (point_coords, point_labels) if point_coords is not None and point_labels is not None else None
            if decoder is None or features.shape[0] != 1:
                low_res, iou = self._backend.decode(
                    features, self.extra_features, points, boxes, mask_input, multimask_output
                )
                return (low_res if keep_prompts is None else low_res[keep_prompts(iou)]), iou
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            dense_input = dense if mask_input is not None else None
            return decoder(features, sparse, dense_input, multimask_output, keep_prompts=keep_prompts)

    def upscale_logits(self, low_res_masks: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits (B, C, h, w) from :meth:`predict_low_res_torch` -> logits at the image's size."""
        _, input_size, original_size = self._sizes()
        with torch.inference_mode():
            if isinstance(self._backend, SamBackend):
                return _postprocess_masks(self.model, low_res_masks, input_size, original_size)
            return self._backend.postprocess(low_res_masks, input_size, original_size)[0]

    def _sizes(self) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
        features, input_size, original_size = self.features, self.input_size, self.original_size
        if not self.is_image_set or features is None or input_size is None or original_size is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return features, input_size, original_size

    def _check_prompts(
        self, point_coords: Any, point_labels: Any, box: Any, mask_input: Any
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        coords = labels = box_array = mask = None
        if point_coords is not None:
            coords = _as_float_array(point_coords, "point_coords")
            if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
                raise ValueError(f"point_coords must have shape (N, 2), as (x, y) pixels; got {coords.shape}")
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
            labels = _as_float_array(point_labels, "point_labels")
            if labels.ndim != 1 or len(labels) != len(coords):
                raise ValueError(
                    f"point_labels must hold one label per point: {len(coords)} points, labels of shape {labels.shape}"
                )
            if self.original_size is not None:
                height, width = self.original_size
                outside = ~(
                    (coords[:, 0] >= 0) & (coords[:, 0] <= width) & (coords[:, 1] >= 0) & (coords[:, 1] <= height)
                )
                if outside.any():
                    x, y = coords[int(np.argmax(outside))]
                    raise ValueError(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
            if not np.isin(labels, POINT_LABELS).all():
                raise ValueError(f"point_labels must be 1 (foreground) or 0 (background); got {labels.tolist()}")
            labels = labels.astype(np.int64)
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if box is not None:
            box_array = _as_float_array(box, "box")
            if box_array.shape not in ((4,), (1, 4)):
                raise ValueError(f"box must be 4 numbers x0, y0, x1, y1; got shape {box_array.shape}")
            box_array = box_array.reshape(4)
            if box_array[2] < box_array[0] or box_array[3] < box_array[1]:
                raise ValueError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1; got {box_array.tolist()}")
            if self.original_size is not None:
                height, width = self.original_size
                if box_outside_image(box_array, width, height):
                    raise ValueError(
                        f"box {box_array.tolist()} reaches outside the {width}x{height} image (0..{width}, "
                        f"0..{height}); clip it to the image"
                    )
        if mask_input is not None:
            mask = _as_float_array(mask_input, "mask_input").astype(np.float32)
            if mask.ndim == 2:
                mask = mask[None]
            expected = (1, *self.model.prompt_encoder.mask_input_size)
            if mask.shape != expected:
                raise ValueError(
                    f"mask_input must have shape {expected} (one low-res logits map from a previous predict); "
                    f"got {mask.shape}"
                )
        return coords, labels, box_array, mask


def box_outside_image(box: Any, width: int, height: int) -> bool:
    """Whether box ``x0, y0, x1, y1`` (pixels) reaches outside a ``width`` x ``height`` image, i.e. leaves
    ``[0, width] x [0, height]``: the one rule of the library and the CLI (the app clips its boxes to the
    image). SAM would scale such a box without complaint and predict from a prompt the image does not hold."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    return x0 < 0 or y0 < 0 or x1 > width or y1 > height


def _postprocess_masks(
    sam: Sam, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
) -> torch.Tensor:
    """``Sam.postprocess_masks``, minus its second resize when that resize is to the same size.

    That happens whenever the image's longest side is the encoder's input size; a bilinear resize to
    the same size samples every pixel at its own position, so skipping it changes no bit.
    """
    if tuple(input_size) != tuple(original_size):
        return sam.postprocess_masks(masks, input_size, original_size)
    size = sam.image_encoder.img_size
    masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
    return masks[..., : input_size[0], : input_size[1]]


def _interactive_decoder(sam: SamLike) -> InteractiveDecoder | None:
    return InteractiveDecoder(sam) if interactive_decoder_supports(sam) else None


def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {value!r}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array
