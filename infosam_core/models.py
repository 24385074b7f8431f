"""Building and loading SAM models, safely.

``load_sam(model_type, checkpoint)`` returns a segment-anything :class:`Sam`:

* ``tiny`` (default) -- the project's own small SAM, pretrained on a synthetic data engine
  (``infosam pretrain``) and bundled in ``resources/models/``. Same classes as SAM, smaller sizes.
* ``vit_b`` / ``vit_l`` / ``vit_h`` -- Meta's architectures, from a checkpoint the user names
  (e.g. ``sam_vit_b_01ec64.pth``). Without a checkpoint they are randomly initialised (with a
  warning): useful for tests and benchmarks only.

Checkpoints are never unpickled with code: ``.pth`` files go through ``torch.load(weights_only=True)``,
``.safetensors`` through safetensors. Every failure raises :class:`CheckpointError` naming the file and
the fix.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
BUNDLED_TINY_CHECKPOINT = RESOURCES_DIR / "models" / "sam_tiny.safetensors"

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class SamArchitecture:
    """Sizes of one SAM variant. All variants share segment-anything's classes."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_depth: int = 2

    @property
    def image_embedding_size(self) -> int:
        return self.image_size // self.patch_size


ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    # The bundled model: 256 px input, 8 px patches -> a 32x32 embedding grid (SAM's is 64x64),
    # 128x128 low-res masks. ~5 M parameters; runs interactively on a 2-core CPU.
    "tiny": SamArchitecture(
        encoder_embed_dim=128,
        encoder_depth=4,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(1, 3),
        image_size=256,
        patch_size=8,
        window_size=8,
        decoder_mlp_dim=512,
    ),
}
MODEL_TYPES: tuple[str, ...] = tuple(ARCHITECTURES)


def build_sam(model_type: str) -> Sam:
    """A randomly initialised SAM of the given type (no weights loaded), in eval mode."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    a = ARCHITECTURES[model_type]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a.encoder_depth,
            embed_dim=a.encoder_embed_dim,
            img_size=a.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a.encoder_num_heads,
            patch_size=a.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=a.encoder_global_attn_indexes,
            window_size=a.window_size,
            out_chans=a.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim,
            image_embedding_size=(a.image_embedding_size, a.image_embedding_size),
            input_image_size=(a.image_size, a.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth,
                embedding_dim=a.prompt_embed_dim,
                mlp_dim=a.decoder_mlp_dim,
                num_heads=8,
            ),
            transformer_dim=a.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    sam.model_type = model_type  # type: ignore[attr-defined]  # read by fingerprints and adapter files
    return sam.eval()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a ``torch.save`` file, never executing code.

    Accepts the raw state dict or the usual wrappers (``{"model": ...}``, ``{"state_dict": ...}``).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found. Give the path of a SAM checkpoint (.pth or .safetensors).")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty. Download or copy the checkpoint again.")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return _load_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - we classify and re-raise with the file's name
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "Unsupported operand" in msg:
            raise CheckpointError(
                f"{path}: refused: the file contains pickled Python objects other than tensors, which could run "
                "code when loaded. Only plain state dicts are accepted; re-save the weights with "
                "`torch.save(model.state_dict(), ...)` or as .safetensors."
            ) from None
        if isinstance(exc, (zipfile.BadZipFile, EOFError, RuntimeError)) or "zip" in msg.lower():
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: {msg.splitlines()[0][:160]}). "
                "Download it again and check its size."
            ) from None
        raise CheckpointError(f"{path}: could not be read as a checkpoint: {msg.splitlines()[0][:200]}") from None
    return _unwrap_state_dict(obj, path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:160]}). "
            "It may be truncated: copy it again."
        ) from None


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: does not hold a state dict of tensors (found {type(obj).__name__}).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors; it is not a model checkpoint.")
    return tensors


def guess_model_type(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which SAM variant a state dict belongs to, from its shapes (None when it is not a SAM)."""
    pos = state_dict.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = 1 + max(
        (int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks.")), default=-1
    )
    for name, a in ARCHITECTURES.items():
        grid = a.image_embedding_size
        if tuple(pos.shape) == (1, grid, grid, a.encoder_embed_dim) and depth == a.encoder_depth:
            return name
    return None


def load_sam(model_type: str = "tiny", checkpoint: str | Path | None = None) -> Sam:
    """Build SAM ``model_type`` and load ``checkpoint`` into it (eval mode, CPU, float32).

    ``tiny`` loads the bundled weights when ``checkpoint`` is None. Other types without a checkpoint are
    randomly initialised, with a warning. Raises :class:`CheckpointError` for any unusable file.
    """
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    if checkpoint is None and model_type == "tiny":
        checkpoint = BUNDLED_TINY_CHECKPOINT
        if not checkpoint.exists():
            raise CheckpointError(
                f"{checkpoint}: the bundled tiny model is missing from this installation. "
                "Reinstall the project or run `infosam pretrain` and pass --checkpoint."
            )
    sam = build_sam(model_type)
    if checkpoint is None:
        warnings.warn(
            f"no checkpoint given for {model_type}: the model is randomly initialised and will not segment "
            "anything useful. Pass the SAM checkpoint file (e.g. sam_vit_b_01ec64.pth).",
            stacklevel=2,
        )
        sam.checkpoint_path = None  # type: ignore[attr-defined]
        return sam
    path = Path(checkpoint)
    state = load_state_dict_file(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = sam.state_dict()
    found_type = guess_model_type(state)
    if found_type is not None and found_type != model_type:
        raise CheckpointError(
            f"{path}: this is a SAM {found_type} checkpoint, but model type {model_type} was asked for. "
            f"Use --model {found_type} (or pick the {model_type} checkpoint)."
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if found_type is None and (len(missing) > len(expected) // 2):
        raise CheckpointError(
            f"{path}: not a SAM checkpoint ({len(missing)} of {len(expected)} SAM weights missing, e.g. "
            f"{missing[0]!r}). Give a segment-anything checkpoint such as sam_vit_b_01ec64.pth."
        )
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match SAM {model_type}: {len(missing)} weights missing"
            f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}. Is it a SAM {model_type} checkpoint?"
        )
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(
            f"{path}: shapes do not match SAM {model_type}: {len(bad)} tensors differ, e.g. {k} is {got}, "
            f"expected {want}. The file was made for another architecture."
        )
    sam.load_state_dict(state)
    sam.checkpoint_path = str(path)  # type: ignore[attr-defined]
    return sam.eval()


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer value (and its name) of ``model``.

    Two models share a fingerprint only when their weights are identical, so image embeddings and
    adapters can be keyed on it: a swapped or adapted model never matches a stale entry.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def weights_stamp(module: torch.nn.Module) -> tuple:
    """Cheap identity of a module's weights: changes when any tensor is replaced or modified in place."""
    stamp = []
    for name, t in module.state_dict(keep_vars=True).items():
        try:
            version = t._version
        except RuntimeError:  # inference tensors have no version counter
            version = -1
        stamp.append((name, t.data_ptr(), version, tuple(t.shape), t.dtype))
    return tuple(stamp)


def save_sam_weights(sam: Sam, path: str | Path, half: bool = True, metadata: dict | None = None) -> Path:
    """Write SAM weights as safetensors (fp16 by default, to keep the bundled file small), atomically."""
    from safetensors.torch import save_file

    from infosam_core.atomic import atomic_path

    path = Path(path)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in sam.state_dict().items()
    }
    meta = {"model_type": getattr(sam, "model_type", "unknown")}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path

