"""Tiled segment-all on Dask (dask.distributed), when one process is not enough.

The client reads each tile's window (from an array or a lazy :class:`~infosam_core.io.large_images.RegionSource`)
and submits it as a task; a worker runs :func:`~infosam_core.inference.tiling_segment.window_proposals` on it and
returns the tile's proposals (bounding-box crops: small); the client stitches them exactly as
:func:`~infosam_core.inference.tiling_segment.segment_all_tiled` does. Same tiles, same proposals, same stitching:
the labels are those of the single-process run.

Each worker loads the model once: tasks carry a :class:`ModelSpec` (model type, checkpoint, adapter, device),
never weights, and a worker keeps the models it built in a module-level cache keyed by it. At most
``max_in_flight`` windows are held by the scheduler at a time, so the client's memory does not grow with the
image. ``client``: a ``dask.distributed.Client`` -- ``Client(LocalCluster(...))`` or ``Client("tcp://host:8786")``
for an existing cluster (:func:`connect`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from infosam_core.inference.automatic import AutomaticConfig
from infosam_core.inference.tiling import Tile, TilingConfig, tile_grid
from infosam_core.inference.tiling_segment import TiledProposal, TiledResult, stitch, window_proposals
from infosam_core.io.large_images import RegionSource, as_regions


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to build the model: the arguments of ``load_model_with_adapter`` (paths as text)."""

    model_type: str = "auto"
    checkpoint: str | None = None
    adapter: str | None = None
    device: str = "auto"


_PREDICTORS: dict[ModelSpec, Any] = {}
_PREDICTORS_LOCK = threading.Lock()


def worker_predictor(spec: ModelSpec) -> Any:
    """The predictor of ``spec`` in this process, built on first use (each worker loads the model once)."""
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(spec)
        if predictor is None:
            import torch

            from infosam_core.adapter_files.loading import load_model_with_adapter
            from infosam_core.inference.predictor import Predictor

            torch.set_num_threads(1)  # one task per worker thread: no oversubscription
            sam = load_model_with_adapter(spec.model_type, spec.checkpoint, spec.adapter, spec.device)
            predictor = _PREDICTORS[spec] = Predictor(sam, cache_size=1)
        return predictor


def _tile_task(
    spec: ModelSpec, crop: np.ndarray, tile: Tile, image_size: tuple[int, int], config: AutomaticConfig
) -> tuple[list[TiledProposal], float]:
    return window_proposals(worker_predictor(spec), crop, tile, image_size, config)


def connect(scheduler: str, n_workers: int = 2) -> Any:
    """A ``dask.distributed.Client``: ``"local"`` starts a LocalCluster of ``n_workers`` processes (one thread
    each), else ``scheduler`` is the address of an existing one (``tcp://host:8786``)."""
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True)
        return Client(cluster)
    return Client(scheduler)


def segment_all_tiled_dask(
    client: Any,
    spec: ModelSpec,
    image: np.ndarray | RegionSource,
    config: AutomaticConfig,
    tiling: TilingConfig,
    progress: Callable[[int, int], None] | None = None,
    max_in_flight: int | None = None,
) -> TiledResult:
    """:func:`~infosam_core.inference.tiling_segment.segment_all_tiled` with the tiles segmented on ``client``'s
    workers (see the module docstring). ``max_in_flight``: windows submitted but not yet returned (default
    4 per worker thread)."""
    from dask.distributed import as_completed

    source = as_regions(image)
    tiles = tile_grid(source.shape, tiling)
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) or 1
        max_in_flight = 4 * threads
    results: dict[int, tuple[list[TiledProposal], float]] = {}
    pending = iter(enumerate(tiles))
    index_of: dict[Any, int] = {}

    def submit_next(queue: Any) -> bool:
        item = next(pending, None)
        if item is None:
            return False
        index, tile = item
        wy0, wx0, wy1, wx1 = tile.window
        crop = source.read_rgb(wy0, wx0, wy1, wx1)
        future = client.submit(_tile_task, spec, crop, tile, source.shape, config, pure=False)
        index_of[future] = index
        queue.add(future)
        return True

    queue = as_completed()
    for _ in range(max_in_flight):
        if not submit_next(queue):
            break
    for future in queue:
        results[index_of.pop(future)] = future.result()
        future.release()
        if progress is not None:
            progress(len(results), len(tiles))
        submit_next(queue)
    proposals = [p for index in range(len(tiles)) for p in results[index][0]]  # the single-process order
    labels, painted, dropped = stitch(proposals, source.shape)
    uncertainty = float(np.mean([results[i][1] for i in range(len(tiles))])) if tiles else 1.0
    return TiledResult(labels, painted, source.shape, uncertainty, len(tiles), dropped)
