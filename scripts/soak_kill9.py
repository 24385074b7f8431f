"""kill -9 soak: SIGKILL a writer at random instants and check that nothing it was told was saved is lost.

Two writers, each a forked child process that is killed with SIGKILL after a random delay (0 to
``--max-delay-ms``), over and over:

* project: the child opens the project and, in a loop, accepts one-pixel objects and deletes old ones
  (``Project.add_object`` / ``remove_object``). Before each change it reports what it starts, after it the
  result, through a pipe. After each kill the parent opens the project anew and checks that every object
  reported saved is there (in ``objects.json`` and in the label image, at its pixel), every object reported
  deleted is gone, nothing else is there, and the change in flight at the kill is either wholly done or
  not at all.
* adapter: the child saves an adapter over the same path again and again (LoRA on the tiny model, every
  tensor filled with the version number). After each kill the parent loads the adapter with
  ``load_peft_checkpoint`` and checks it is the version last reported saved, or the one in flight.

Prints the figures (kills, objects verified, adapters verified, losses); exits 1 on any loss.

    python scripts/soak_kill9.py --kills 2000 --adapter-kills 500
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE = 48
MAX_OBJECTS = 40


def _send(fd: int, message: str) -> None:
    os.write(fd, (message + "\n").encode())


def _fork(work, *args) -> tuple[int, int]:
    """Run ``work(write_fd, *args)`` in a forked child; returns (pid, read_fd)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: work until killed
        os.close(read_fd)
        try:
            work(write_fd, *args)
        except BaseException as exc:  # noqa: BLE001 - a writer that fails (not killed) is reported
            _send(write_fd, f"E {type(exc).__name__}: {exc}")
        finally:
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd


def _kill_after(pid: int, read_fd: int, delay_s: float) -> list[str]:
    """SIGKILL ``pid`` after ``delay_s``; returns every line it wrote."""
    data = b""
    deadline = time.monotonic() + delay_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([read_fd], [], [], left)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    return data.decode().splitlines()


# ----------------------------------------------------------------------------------------------- project
def _project_child(fd: int, root: Path, key: str, seed: int) -> None:
    from infosam_core.annotation.project import Project
    from infosam_core.annotation.records import ObjectPrompts

    rng = random.Random(seed)
    project = Project.open(root)
    while True:
        ann = project.annotations(key)
        if len(ann.objects) >= MAX_OBJECTS or (ann.objects and rng.random() < 0.3):
            oid = min(ann.objects)
            _send(fd, f"BR {oid}")
            project.remove_object(key, oid)
            _send(fd, f"R {oid}")
            continue
        labels = ann.labels if ann.labels is not None else np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint16)
        free = np.argwhere(labels == 0)
        y, x = (int(v) for v in free[rng.randrange(len(free))])
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
        mask[y, x] = True
        _send(fd, f"BA {y} {x}")
        obj = project.add_object(key, mask, ObjectPrompts(points=[[x, y, 1]]))
        _send(fd, f"A {obj.id} {y} {x}")


def _disk_objects(root: Path, key: str) -> dict[int, tuple[int, int]]:
    """id -> (y, x) from a fresh Project, checked against its label image (one pixel per object)."""
    from infosam_core.annotation.project import Project

    ann = Project.open(root).annotations(key)
    if ann.labels is None:
        if ann.objects:
            raise AssertionError(f"{len(ann.objects)} objects but no label image")
        return {}
    found = {}
    for oid, obj in ann.objects.items():
        ys, xs = np.nonzero(ann.labels == oid)
        if len(ys) != 1 or obj.area != 1:
            raise AssertionError(f"object {oid}: {len(ys)} pixels in the label image, area {obj.area}")
        found[oid] = (int(ys[0]), int(xs[0]))
    stray = set(np.unique(ann.labels).tolist()) - set(found) - {0}
    if stray:
        raise AssertionError(f"label values without an object: {sorted(stray)[:5]}")
    return found


def soak_project(folder: Path, kills: int, max_delay_s: float, seed: int = 0) -> dict[str, int]:
    import imageio.v3 as iio

    from infosam_core.annotation.project import Project

    rng = random.Random(seed)
    image = folder / "image.png"
    iio.imwrite(image, np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8))
    root = folder / "project"
    key = Project.create(root).add_images([image])[0].key
    expected: dict[int, tuple[int, int]] = {}
    figures = {"kills": 0, "kills_mid_change": 0, "changes_reported": 0, "objects_verified": 0, "losses": 0}
    for i in range(kills):
        pid, fd = _fork(_project_child, root, key, seed * 100_003 + i)
        lines = _kill_after(pid, fd, rng.uniform(0.0, max_delay_s))
        figures["kills"] += 1
        in_flight = None
        for line in lines:
            parts = line.split()
            if parts[0] == "E":
                raise RuntimeError(f"the project writer failed: {line[2:]}")
            if parts[0] == "A":
                expected[int(parts[1])] = (int(parts[2]), int(parts[3]))
                in_flight = None
                figures["changes_reported"] += 1
            elif parts[0] == "R":
                expected.pop(int(parts[1]), None)
                in_flight = None
                figures["changes_reported"] += 1
            else:
                in_flight = parts
        on_disk = _disk_objects(root, key)
        figures["kills_mid_change"] += in_flight is not None
        if in_flight and in_flight[0] == "BA":  # done or not: either is fine, half is not (checked above)
            yx = (int(in_flight[1]), int(in_flight[2]))
            extra = [oid for oid, p in on_disk.items() if oid not in expected and p == yx]
            if extra:
                expected[extra[0]] = yx
        elif in_flight and in_flight[0] == "BR":
            oid = int(in_flight[1])
            if oid not in on_disk:
                expected.pop(oid, None)
        if on_disk != expected:
            lost = {k: v for k, v in expected.items() if on_disk.get(k) != v}
            extra = {k: v for k, v in on_disk.items() if k not in expected}
            figures["losses"] += len(lost) + len(extra)
            print(f"kill {i}: lost {lost}, unexpected {extra}", file=sys.stderr)
            expected = on_disk
        figures["objects_verified"] += len(on_disk)
        if (i + 1) % 100 == 0:
            print(f"project: {json.dumps(figures)}", file=sys.stderr, flush=True)
    figures.update(_clean_up_counts(folder))
    return figures


# ----------------------------------------------------------------------------------------------- adapter
def _base_tiny(seed: int = 0):
    import torch

    from infosam_core.models.sam import build_sam

    torch.manual_seed(seed)
    return build_sam("tiny").eval()


def _clean_up_counts(folder: Path) -> dict[str, int]:
    """Temp files the kills left (removed now as a later save would, once they are a minute old)."""
    from infosam_core.io.atomic import remove_stale_temp_files

    removed = sum(remove_stale_temp_files(p, min_age_s=0) for p in [folder, *folder.rglob("*")] if p.is_dir())
    left = [p for p in folder.rglob(".*.tmp*")]
    return {"stale_temp_files_removed": removed, "temp_files_left": len(left)}


def _fill(model, version: int) -> None:
    import torch

    from infosam_core.peft.state import trained_state

    with torch.no_grad():
        for tensor in trained_state(model).values():
            tensor.fill_(float(version))


def _adapter_child(fd: int, model, path: Path, start: int) -> None:
    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint

    version = start
    while True:
        version += 1
        _fill(model, version)
        _send(fd, f"B {version}")
        save_peft_checkpoint(model, path)
        _send(fd, f"D {version}")


def _loaded_version(base, path: Path) -> int:
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
    from infosam_core.peft.state import trained_state

    model = load_peft_checkpoint(base, path)
    values = {float(t.flatten()[0]) for t in trained_state(model).values()}
    values |= {float(t.min()) for t in trained_state(model).values()} | {
        float(t.max()) for t in trained_state(model).values()
    }
    if len(values) != 1:
        raise AssertionError(f"{path}: tensors of different versions {sorted(values)[:4]}")
    return int(values.pop())


def soak_adapter(folder: Path, kills: int, max_delay_s: float, seed: int = 0) -> dict[str, int]:
    import copy

    import torch

    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
    from infosam_core.peft.registry import apply_peft

    torch.set_num_threads(1)
    rng = random.Random(seed)
    base = _base_tiny()
    model = copy.deepcopy(base)
    apply_peft(model, "lora", rank=2, train_decoder=False)
    path = folder / "adapter"
    _fill(model, 0)
    save_peft_checkpoint(model, path)
    committed = 0
    figures = {"kills": 0, "kills_mid_save": 0, "saves_reported": 0, "adapters_verified": 0, "losses": 0}
    for i in range(kills):
        pid, fd = _fork(_adapter_child, model, path, committed)
        lines = _kill_after(pid, fd, rng.uniform(0.0, max_delay_s))
        figures["kills"] += 1
        in_flight = None
        for line in lines:
            if line.startswith("E "):
                raise RuntimeError(f"the adapter writer failed: {line[2:]}")
            kind, version = line.split()
            if kind == "D":
                committed, in_flight = int(version), None
                figures["saves_reported"] += 1
            else:
                in_flight = int(version)
        figures["kills_mid_save"] += in_flight is not None
        try:
            loaded = _loaded_version(base, path)
        except Exception as exc:  # noqa: BLE001 - any failure to load is a loss
            print(f"kill {i}: adapter unloadable: {exc}", file=sys.stderr)
            figures["losses"] += 1
            save_peft_checkpoint(model, path)
            continue
        if loaded != committed and loaded != in_flight:
            print(f"kill {i}: loaded version {loaded}, saved {committed}, in flight {in_flight}", file=sys.stderr)
            figures["losses"] += 1
        committed = max(committed, loaded)
        figures["adapters_verified"] += 1
        if (i + 1) % 50 == 0:
            print(f"adapter: {json.dumps(figures)}", file=sys.stderr, flush=True)
    save_peft_checkpoint(model, path)  # a save after the kills removes superseded tensor files
    figures.update(_clean_up_counts(folder))
    figures["tensor_files_left"] = len(list(folder.glob("adapter.*.safetensors")))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kills of the project writer")
    parser.add_argument("--adapter-kills", type=int, default=300, help="kills of the adapter writer")
    parser.add_argument("--max-delay-ms", type=float, default=250.0, help="kill after 0..this many ms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.monotonic()
        (Path(tmp) / "p").mkdir()
        (Path(tmp) / "a").mkdir()
        project = soak_project(Path(tmp) / "p", args.kills, args.max_delay_ms / 1000, args.seed)
        adapter = soak_adapter(Path(tmp) / "a", args.adapter_kills, args.max_delay_ms / 1000, args.seed)
        figures = {"project": project, "adapter": adapter, "seconds": round(time.monotonic() - start, 1)}
    print(json.dumps(figures, indent=2))
    return 1 if project["losses"] or adapter["losses"] else 0


if __name__ == "__main__":
    sys.exit(main())
