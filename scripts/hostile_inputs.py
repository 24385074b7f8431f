"""Crafted inputs for the hostile round (``scripts/hostile_round.py``, issue 32): each numbered case's hostile files,
written under one work folder at paths the round knows (``WORK/cNN/...``, ``WORK/common/...``).

Run as ``python scripts/hostile_inputs.py WORK CASE [CASE ...]`` (the round does this in a child process, so that
the round itself imports no torch and its children's peak memory is their own). Writes ``WORK/facts.json``
(``cuda``: whether this machine has a CUDA GPU; ``run_keys``: the run keys the round needs).

Every crafted file is small on disk; the bombs are described by their headers and never expanded here."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# -------------------------------------------------------------------------------------------- plans and data
DATASET = '[[datasets]]\nname = "{name}"\ntrain = "{path}"\ntest = "{path}"\n'
METHOD = '[[methods]]\nname = "{name}"\npeft = "decoder"\n'
TINY_TRAIN = "[train]\nepochs = 1\nbatch_size = 2\nmax_steps = 1\n"
SIX_RUNS = {"methods": ("Decoder-only", "Decoder again", "Decoder third"), "seeds": (0, 1)}


def plan_text(
    datasets: tuple[str, ...] = ("Blobs",),
    methods: tuple[str, ...] = ("Decoder-only",),
    seeds: tuple[int, ...] = (0,),
    path: str = "blobs",
    extra: str = "",
    train: str = TINY_TRAIN,
) -> str:
    """A plan of ``datasets`` x ``methods`` (decoder-only PEFT) x ``seeds``: one epoch, one step per run."""
    text = f"seeds = {list(seeds)}\n{extra}{train}"
    text += "".join(DATASET.format(name=d, path=path) for d in datasets)
    return text + "".join(METHOD.format(name=m) for m in methods)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def blob_image(shape: tuple[int, int], centre: tuple[int, int], radii: tuple[int, int], seed: int) -> tuple:
    """A dark noisy RGB image of ``shape`` with one bright ellipse, and the ellipse's mask (0 / 255)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    inside = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1
    image = rng.integers(0, 90, (*shape, 3), dtype=np.uint8)
    image[inside] += 140
    return image, (inside * 255).astype(np.uint8)


def write_blobs(root: Path, count: int = 2) -> Path:
    """An ``infosam train --data`` folder (images/ + masks/): ``count`` 48 x 64 images, one ellipse each."""
    for i in range(count):
        image, mask = blob_image((48, 64), (24, 30 + i), (10, 14), seed=i)
        write_png(root / "images" / f"im{i}.png", image)
        write_png(root / "masks" / f"im{i}.png", mask)
    return root


# ---------------------------------------------------------------------------------------- weights, adapters
def tiny_state() -> dict[str, Any]:
    from infosam_core.models.registry import load_sam

    return {k: v.detach().clone() for k, v in load_sam("tiny").state_dict().items()}


def save_adapter(folder: Path) -> tuple[Path, Path]:
    """A BitFit adapter on the bundled tiny model (so the CLI's default model accepts it): (tensors, json)."""
    import torch

    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
    from infosam_core.models.registry import load_sam
    from infosam_core.peft.registry import apply_peft

    sam = load_sam("tiny")
    apply_peft(sam, "bitfit", generator=torch.Generator().manual_seed(0))
    folder.mkdir(parents=True, exist_ok=True)
    return save_peft_checkpoint(sam, folder / "a")


def rewrite_adapter_tensors(tensors_path: Path, json_path: Path, change) -> None:
    """Apply ``change(tensors)`` to an adapter's tensors and record the new file's hash in its JSON."""
    import hashlib

    from safetensors.torch import load_file, save_file

    tensors = load_file(tensors_path)
    change(tensors)
    save_file(tensors, str(tensors_path))
    meta = json.loads(json_path.read_text())
    meta["tensors_sha256"] = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))


def zip_bomb(path: Path, numel: int) -> Path:
    """A ``torch.save`` file whose one tensor (``numel`` float32 zeros) is a deflated zip member: ~1 MB on disk
    for 1 GiB inflated. Built by rewriting a small saved tensor's sizes (the tensor is never allocated)."""
    import torch

    small = path.with_suffix(".small")
    torch.save({"w": torch.zeros(200)}, small)
    with zipfile.ZipFile(small) as zin:
        members = {name: zin.read(name) for name in zin.namelist()}
    small.unlink()
    pkl = next(name for name in members if name.endswith("data.pkl"))
    members[pkl] = members[pkl].replace(b"K\xc8", b"J" + numel.to_bytes(4, "little"))  # storage size, tensor size
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members.items():
            if name.endswith("/data/0"):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(info, "w", force_zip64=True) as member:
                    chunk = bytes(1 << 22)
                    for _ in range(4 * numel // len(chunk)):
                        member.write(chunk)
            else:
                zout.writestr(name, data)
    return path


def stride_zero(path: Path, numel: int) -> Path:
    """A one-element storage seen as a ``numel``-element tensor (stride 0): ~1.5 KB on disk."""
    import torch

    torch.save({"image_encoder.pos_embed": torch.zeros(1).expand(numel)}, path)
    return path


def legacy_storage_bomb(path: Path, numel: int) -> Path:
    """A pre-1.6 (non-zip) ``torch.save`` file whose pickle declares a storage of ``numel`` float32."""
    import torch

    torch.save({"a": torch.zeros(3, 4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    body = numel.to_bytes((numel.bit_length() + 8) // 8, "little", signed=True)
    path.write_bytes(data.replace(b"cpuq\x06K\x0c", b"cpuq\x06\x8a" + bytes([len(body)]) + body))
    return path


# ----------------------------------------------------------------------------------------------- images
def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def apng_bomb(path: Path, frames: int, size: int) -> Path:
    """An APNG of ``frames`` frames on a ``size`` x ``size`` gray canvas: the first frame a whole (compressed
    zero) image, every other frame one pixel (``fcTL`` + ``fdAT``). Tens of KB; a decoder that expands every
    frame to the canvas allocates ``frames * size**2 * channels`` bytes."""
    rows = zlib.compress(b"".join(b"\x00" + bytes(size) for _ in range(size)), 9)
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))]
    out.append(_png_chunk(b"acTL", struct.pack(">II", frames, 0)))
    sequence = 0
    for frame in range(frames):
        width = size if frame == 0 else 1
        x = 0 if frame == 0 else frame % size
        out.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, width, x, 0, 1, 10, 0, 0)))
        sequence += 1
        if frame == 0:
            out.append(_png_chunk(b"IDAT", rows))
        else:
            pixel = zlib.compress(b"\x00" + bytes([(frame * 7) % 256]))
            out.append(_png_chunk(b"fdAT", struct.pack(">I", sequence) + pixel))
            sequence += 1
    out.append(_png_chunk(b"IEND", b""))
    return write(path, b"".join(out))


def gif_bomb(path: Path, frames: int, size: int) -> Path:
    """A GIF of ``frames`` one-pixel frames on a ``size`` x ``size`` logical screen (18 bytes a frame)."""
    out = [b"GIF89a", struct.pack("<HHBBB", size, size, 0x80, 0, 0), b"\x00\x00\x00\xff\xff\xff"]
    out.append(b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")  # loop
    for frame in range(frames):
        out.append(b"!\xf9\x04\x00\x01\x00\x00\x00")  # graphic control: 10 ms
        x, y = frame % size, (frame // size) % size
        out.append(b"," + struct.pack("<HHHHB", x, y, 1, 1, 0))
        pixel = frame % 2  # LZW, 2-bit codes: clear (4), the pixel, end (5), packed LSB first in 3-bit codes
        codes = 4 | (pixel << 3) | (5 << 6)
        out.append(b"\x02\x02" + codes.to_bytes(2, "little") + b"\x00")
    out.append(b";")
    return write(path, b"".join(out))


def cmyk_jpeg(path: Path) -> Path:
    """16 x 16: left half RGB (229, 100, 50), right half (20, 200, 240), saved as a CMYK JPEG."""
    from PIL import Image

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (229, 100, 50)
    rgb[:, 8:] = (20, 200, 240)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
    return path


def cmyk_tiff(path: Path) -> Path:
    """8 x 10, full cyan (RGB 0, 255, 255), the top rows half black (0, 127, 127), as a separated (CMYK) TIFF."""
    import tifffile

    cmyk = np.zeros((8, 10, 4), np.uint8)
    cmyk[..., 0] = 255
    cmyk[:4, :, 3] = 128
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, cmyk, photometric="separated")
    return path


# ------------------------------------------------------------------------------------------------- cases
def common(work: Path) -> None:
    """Shared by many cases: the blobs data root, a 64 x 64 image, a folder of 2 images for ``segment``, the
    bundled tiny model's weights as a ``.pth``, and a valid adapter."""
    base = work / "common"
    if (base / "done").exists():
        return
    write_blobs(work / "data" / "blobs")
    (work / "data" / "exp").mkdir(exist_ok=True)
    image, _ = blob_image((64, 64), (30, 32), (14, 16), seed=7)
    write_png(base / "img.png", image)
    for i in range(2):
        image, _ = blob_image((64, 80), (28 + i, 36), (12, 16), seed=10 + i)
        write_png(base / "seg" / f"s{i}.png", image)
    import torch

    torch.save(tiny_state(), base / "tiny.pth")
    save_adapter(base / "adapter")
    (base / "done").touch()


def craft_1(work: Path, facts: dict) -> None:
    write(work / "c01" / "plan.toml", plan_text(datasets=("a__b", "a"), methods=("c", "b__c")))


def craft_2(work: Path, facts: dict) -> None:
    link = work / "c02" / "link-to-data"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(work / "data")


def craft_3(work: Path, facts: dict) -> None:
    for name in ("results.csv", "table.md"):
        write(work / "c03" / name / "out" / name, "my own notes, not an experiment's\n")
    write(work / "c03" / "plan.toml", plan_text())


def craft_4(work: Path, facts: dict) -> None:
    write(work / "c04" / "plan.toml", plan_text(**SIX_RUNS))  # type: ignore[arg-type]


def craft_5(work: Path, facts: dict) -> None:
    from infosam_core.experiments.plan import load_plan

    plan = write(work / "c05" / "plan.toml", plan_text())
    run = load_plan(plan).runs(work / "data")[0]
    runs = work / "c05" / "out" / "runs"
    # a claim file of the old scheme naming a live unrelated process (pid 1), and a lock file nobody holds
    write(runs / f"{run.key}.claim", json.dumps({"pid": 1, "host": os.uname().nodename}))
    write(runs / f"{run.key}.lock", "left by a dead runner")
    facts["run_keys"]["c05"] = run.key


def craft_6(work: Path, facts: dict) -> None:
    for which in ("tensors", "json"):
        tensors, json_path = save_adapter(work / "c06" / f"{which}-fifo")
        target = tensors if which == "tensors" else json_path
        target.unlink()
        os.mkfifo(target)


def craft_7(work: Path, facts: dict) -> None:
    apng_bomb(work / "c07" / "bomb.png", frames=280, size=4000)  # 4.5 G pixels decoded
    gif_bomb(work / "c07" / "bomb.gif", frames=12_000, size=1500)  # 27 G pixels decoded
    (work / "c07" / "seg").mkdir(exist_ok=True)
    shutil.copy(work / "c07" / "bomb.png", work / "c07" / "seg" / "bomb.png")


def craft_8(work: Path, facts: dict) -> None:
    zip_bomb(work / "c08" / "zip.pth", numel=1 << 28)  # 1 GiB inflated
    stride_zero(work / "c08" / "stride.pth", numel=1 << 30)  # 4 GiB when copied
    stride_zero(work / "c08" / "stride-huge.pth", numel=1 << 36)  # 256 GiB
    legacy_storage_bomb(work / "c08" / "legacy.pth", numel=1 << 38)  # 1 TiB declared


def craft_9(work: Path, facts: dict) -> None:
    _, json_path = save_adapter(work / "c09" / "adapter")
    meta = json.loads(json_path.read_text())
    meta["distiller"] = {"name": "semckd", "options": {"mid_channels": 3000}}
    json_path.write_text(json.dumps(meta))
    method = (
        '[[methods]]\nname = "SemCKD"\npeft = "adapter"\ndistill = "semckd"\ndistill_options = {mid_channels = 3000}\n'
    )
    write(work / "c09" / "plan.toml", plan_text(methods=()) + method)


def craft_10(work: Path, facts: dict) -> None:
    fifo = work / "c10" / "fifo.toml"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    if not fifo.exists():
        os.mkfifo(fifo)
    write(work / "c10" / "big.toml", plan_text() + "# " + "x" * (1 << 20) + "\n")


PLAN_STRUCTURES = {
    "non-utf8": b'title = "\xff\xfe"\n' + plan_text().encode(),
    "datasets-string": ('datasets = "x"\n' + METHOD.format(name="m")).encode(),
    "datasets-strings": ('datasets = ["x"]\n' + METHOD.format(name="m")).encode(),
    "methods-table": (DATASET.format(name="d", path="p") + '[methods]\nname = "m"\npeft = "decoder"\n').encode(),
    "5000-deep": ("x = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
}


def craft_11(work: Path, facts: dict) -> None:
    for name, text in PLAN_STRUCTURES.items():
        write(work / "c11" / f"{name}.toml", text)
    (work / "c11" / "folder.toml").mkdir(exist_ok=True)


def _train_with(extra: str) -> str:
    key = extra.split(" = ")[0]
    kept = "".join(line + "\n" for line in TINY_TRAIN.splitlines() if not line.startswith(key + " "))
    return kept + extra


PLAN_VALUES = {
    "device-cuda": ('device = "cuda"\n', "device = 'cuda'"),
    "device-tpu9": ('device = "tpu9"\n', "'device' must be auto, cpu, mps, cuda or cuda:N"),
    "device-7": ("device = 7\n", "'device'"),
    "epochs-1.5": ("epochs = 1.5\n", "'epochs' must be a whole number"),
    "epochs-inf": ("epochs = inf\n", "'epochs' must be a whole number"),
}


def craft_12(work: Path, facts: dict) -> None:
    for name, (extra, _) in PLAN_VALUES.items():
        write(work / "c12" / f"{name}.toml", plan_text(train=_train_with(extra)))
    write(work / "c12" / "seeds-true.toml", plan_text().replace("seeds = [0]", "seeds = [true]"))
    alpha = '[[methods]]\nname = "alpha"\npeft = "adapter"\ndistill = "infosam"\ndistill_options = {alpha = 1e308}\n'
    write(work / "c12" / "alpha.toml", plan_text(methods=("steady",)) + alpha)  # beyond alpha's bounds: refused
    # within every bound, and diverges at its second step (the loss is NaN): recorded as failed, the others run
    diverges = '[[methods]]\nname = "diverges"\npeft = "decoder"\nlr = 1e30\nmin_lr = 1e30\nepochs = 3\nmax_steps = 3\n'
    write(work / "c12" / "diverged.toml", plan_text(methods=("steady",)) + diverges)


def craft_13(work: Path, facts: dict) -> None:
    pass  # damages the finished records of case 1 (the round does that: plain JSON files)


def craft_14(work: Path, facts: dict) -> None:
    import torch

    state = tiny_state()
    state["image_encoder.blocks.x.weight"] = torch.zeros(1)
    (work / "c14").mkdir(exist_ok=True)
    torch.save(state, work / "c14" / "crafted.pth")
    sam2ish = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.zeros(()),
        "sam_mask_decoder.iou_token.weight": torch.zeros(1),
        "image_encoder.trunk.blocks.1e3.w": torch.zeros(1),
    }
    torch.save(sam2ish, work / "c14" / "sam2ish.pth")


def _dtype_checkpoint(path: Path, dtype: Any) -> Path:
    import torch

    state = tiny_state()
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"].to(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _dtype_adapter(folder: Path, dtype: Any) -> Path:
    tensors, json_path = save_adapter(folder)

    def change(t: dict) -> None:
        name = next(iter(t))
        t[name] = t[name].to(dtype)

    rewrite_adapter_tensors(tensors, json_path, change)
    return json_path


def craft_15(work: Path, facts: dict) -> None:
    import torch

    _dtype_checkpoint(work / "c15" / "f8.pth", torch.float8_e4m3fn)
    _dtype_adapter(work / "c15" / "adapter", torch.float8_e4m3fn)


def craft_16(work: Path, facts: dict) -> None:
    tensors, _ = save_adapter(work / "c16" / "adapter")
    tensors.unlink()
    tensors.mkdir()


def craft_17(work: Path, facts: dict) -> None:
    base = work / "c17"
    write(base / "a-file", "x")
    for i in range(2):
        write_png(base / "truth" / f"s{i}.png", np.zeros((20, 20), np.uint8))
    shutil.copytree(work / "common" / "seg", base / "images", dirs_exist_ok=True)


def craft_18(work: Path, facts: dict) -> None:
    import torch
    from safetensors.torch import save_file

    base = work / "c18"
    base.mkdir(exist_ok=True)
    full = (work / "common" / "tiny.pth").read_bytes()
    write(base / "cut.pth", full[: len(full) // 3])
    state = tiny_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(base / "w.safetensors"))
    data = bytearray((base / "w.safetensors").read_bytes())
    data[8:20] = b"{garbage!!!!"
    write(base / "bad.safetensors", bytes(data))
    (base / "w.safetensors").unlink()
    torch.save({"model": state, "code": threading.Lock}, base / "code.pth")
    write(base / "plain.pkl", pickle.dumps({"a": [1, 2]}, protocol=4))
    if not (base / "fifo.pth").exists():
        os.mkfifo(base / "fifo.pth")


def craft_19(work: Path, facts: dict) -> None:
    import torch

    for name, dtype in (("int32", torch.int32), ("bool", torch.bool), ("uint8", torch.uint8)):
        _dtype_checkpoint(work / "c19" / f"{name}.pth", dtype)
    _dtype_adapter(work / "c19" / "adapter", torch.bool)


def craft_20(work: Path, facts: dict) -> None:
    cmyk_jpeg(work / "c20" / "print.jpg")
    cmyk_tiff(work / "c20" / "print.tif")


PLAN_VALUES_AT_RUN = {
    "epochs-'3'": ('epochs = "3"\n', "'epochs' must be a whole number"),
    "batch_size-2.5": ("batch_size = 2.5\n", "'batch_size' must be a whole number"),
}


def craft_21(work: Path, facts: dict) -> None:
    for name, (extra, _) in PLAN_VALUES_AT_RUN.items():
        write(work / "c21" / f"{name}.toml", plan_text(train=_train_with(extra)))
    write(work / "c21" / "seeds-negative.toml", plan_text().replace("seeds = [0]", "seeds = [-1]"))
    write(work / "c21" / "name-260.toml", plan_text(methods=("x" * 260,)))


def craft_22(work: Path, facts: dict) -> None:
    shutil.copytree(work / "common" / "seg", work / "c22" / "images", dirs_exist_ok=True)


def craft_23(work: Path, facts: dict) -> None:
    pass  # the round runs the library's Predictor in a child process on a 64 x 64 image


def craft_24(work: Path, facts: dict) -> None:
    pass  # `infosam train` on the common blobs data


CRAFTERS = {n: globals()[f"craft_{n}"] for n in range(1, 25)}


def main(argv: list[str]) -> int:
    work = Path(argv[0]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    facts_path = work / "facts.json"
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {"run_keys": {}}
    import torch

    torch.set_num_threads(1)
    facts["cuda"] = bool(torch.cuda.is_available())
    common(work)
    for number in (int(a) for a in argv[1:]):
        (work / f"c{number:02d}").mkdir(exist_ok=True)
        CRAFTERS[number](work, facts)
    facts_path.write_text(json.dumps(facts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
