"""The numeric precision of the image encoder at prediction time, chosen by the hardware: ``auto`` (default),
``float32``, ``bfloat16`` or ``int8``.

* ``bfloat16``: the encoder runs under :func:`torch.autocast` (matrix products and attention in bfloat16, layer
  norms and the output in float32), as SAM2's own predictor does on GPUs. Native -- several times float32's
  matrix rate -- on CUDA GPUs that support it and on CPUs with AMX (``amx_bf16``). A CPU with only
  AVX-512-BF16 (``avx512_bf16``) converts but does not multiply faster: measured here, a 2048^2 matmul ran at
  56 GFLOPS in bfloat16 against 88 in float32, so ``auto`` does not choose it there.
* ``int8``: dynamic quantization of the encoder's linear layers (weights int8 per output channel, activations
  quantized per call; ``torch.ao.quantization.quantize_dynamic``) on a copy of the encoder; CPU only.
* ``float32``: the reference.

``auto`` is :func:`auto_precision`: bfloat16 where it is native (CUDA with bf16, a CPU with AMX), float32
otherwise -- int8 is never chosen by itself, because its error on the embedding (3 % relative L2 on ViT-B with
random weights, ``benchmarks/bench_precision.py``) is above what we accept as "the same masks" by default.
The decoder always runs in float32 (it is cheap, and the masks' thresholds live there).

:func:`encoder_context` gives the context an encoder pass runs in; :func:`quantized_copy` the int8 model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn

Precision = Literal["auto", "float32", "bfloat16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "int8")
#: what each resolved precision adds to an embedding's model fingerprint (float32: nothing, as before)
FINGERPRINT_TAGS = {"float32": "", "bfloat16": "_bf16", "int8": "_int8"}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's low-precision instructions (Linux ``/proc/cpuinfo`` flags; torch's checks elsewhere)."""

    amx_bf16: bool
    avx512_bf16: bool
    vnni: bool  # int8 dot products (AVX-512 VNNI or AVX-VNNI)

    @property
    def native_bf16(self) -> bool:
        """bfloat16 matrix products faster than float32's: AMX tiles (AVX-512-BF16 alone is not, measured)."""
        return self.amx_bf16


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once)."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if not flags:  # not Linux: torch's own checks
        checks = {
            "amx_bf16": getattr(torch.cpu, "_is_amx_tile_supported", lambda: False),
            "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False),
            "avx512_vnni": getattr(torch.cpu, "_is_vnni_supported", lambda: False),
        }
        flags = {name for name, check in checks.items() if check()}
    return CpuFeatures(
        amx_bf16="amx_bf16" in flags,
        avx512_bf16="avx512_bf16" in flags,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni"}),
    )


def native_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 runs faster than float32 on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_features().native_bf16
    return False


def auto_precision(device: torch.device | str) -> str:
    """What ``auto`` means on ``device`` (see the module docstring): ``bfloat16`` where native, else ``float32``."""
    return "bfloat16" if native_bf16(device) else "float32"


def auto_reason(device: torch.device | str) -> str:
    """Why ``auto`` chose what it did on ``device``, in a few words ("AMX", "no AMX", "CUDA bf16", ...)."""
    device = torch.device(device)
    if device.type == "cuda":
        return "CUDA bf16" if native_bf16(device) else "CUDA without bf16"
    if device.type == "cpu":
        return "AMX" if cpu_features().amx_bf16 else "no AMX"  # AVX-512-BF16 alone is not faster (measured)
    return f"{device.type}: float32"


def describe_precision(precision: str, device: torch.device | str) -> str:
    """The precision encoder passes run in when ``precision`` is asked for on ``device``, for people:
    ``"float32 (auto: no AMX)"``, ``"bfloat16 (auto: AMX)"``, ``"int8 (chosen)"``. ValueError as
    :func:`resolve_precision`."""
    resolved = resolve_precision(precision, device)
    return f"{resolved} (auto: {auto_reason(device)})" if precision == "auto" else f"{resolved} (chosen)"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision an encoder pass on ``device`` runs in when ``precision`` is asked for (``auto`` resolved).

    ValueError for an unknown name and for ``int8`` on a GPU (dynamic quantization is a CPU kernel).
    """
    check_precision(precision)
    device = torch.device(device)
    if precision == "auto":
        return auto_precision(device)
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"precision int8 runs on the CPU only (dynamic quantization), not on {device.type}; "
            "use --precision bfloat16 or float32 there"
        )
    return precision


@contextlib.contextmanager
def encoder_context(precision: str, device: torch.device | str) -> Iterator[None]:
    """The context an encoder pass runs in for a resolved ``precision`` (autocast for bfloat16)."""
    if precision == "bfloat16":
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield


def as_float32(tensor: torch.Tensor) -> torch.Tensor:
    """An encoder output back in float32 (what the decoder, the cache and the store hold)."""
    return tensor.float() if tensor.is_floating_point() and tensor.dtype != torch.float32 else tensor


def quantized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose image encoder's ``nn.Linear`` layers are int8 dynamically quantized (CPU).

    The rest (decoder, prompt encoder, convolutions, norms) is copied as it is. Raises RuntimeError when this
    torch build has no quantized engine."""
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines), None)
    if engine is None:
        raise RuntimeError(f"precision int8: this torch build has no quantized CPU engine ({engines})")
    torch.backends.quantized.engine = engine
    copied = copy.deepcopy(model)
    encoder = cast(nn.Module, copied.image_encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {nn.Linear: per_channel_dynamic_qconfig}  # weights per output channel: never worse than per tensor
        copied.image_encoder = quantize_dynamic(encoder, spec, dtype=torch.qint8)
    return copied
