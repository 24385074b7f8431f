"""Exporting the adapted model (infosam_core.model_export, `infosam export-model`) and loading micro-sam's
checkpoints: a LoRA adapter merged into a plain SAM checkpoint predicts, in stock segment-anything, what
`infosam predict --adapter` predicts; an Adapter-trained model's ONNX files predict what the torch model does
(onnxruntime); formats that do not apply are refused with one line."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import disc_samples, quick
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from infosam_core.adapter_files.loading import load_model_with_adapter
from infosam_core.cli import main
from infosam_core.inference.predictor import Predictor
from infosam_core.model_export.formats import (
    ExportFormatError,
    check_format,
    formats_for,
    precheck_format,
)
from infosam_core.model_export.merge import merged_state_dict
from infosam_core.models.registry import resolve_model_type
from infosam_core.models.sam import build_sam
from infosam_core.peft.registry import apply_peft
from infosam_core.training.runs import train_and_save

onnxruntime = pytest.importorskip("onnxruntime")


def _image() -> np.ndarray:
    """A 120 x 160 test image (a bright disk on noise): not square, so the resize and padding matter."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:120, :160]
    image[(yy - 62) ** 2 + (xx - 75) ** 2 < 30**2] += 110
    return image


def _train(tmp_path_factory, peft: str, distill: str):
    base = load_model_with_adapter("tiny", device="cpu")
    folder = tmp_path_factory.mktemp(peft)
    saved = train_and_save(quick(peft=peft, distill=distill, epochs=2, lr=3e-3), base, disc_samples(4), folder)
    assert saved.files is not None
    return saved.files.adapter


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory):
    """A LoRA adapter on the tiny model, trained with InfoSAM's distiller (whose parts must not be exported)."""
    return _train(tmp_path_factory, "lora", "infosam")


@pytest.fixture(scope="module")
def adapter_adapter(tmp_path_factory):
    return _train(tmp_path_factory, "adapter", "none")


PROMPTS = [  # (points, labels, box) in image pixels
    (np.array([[70.0, 60.0]]), np.array([1]), None),
    (np.array([[70.0, 60.0], [10.0, 10.0]]), np.array([1, 0]), None),
    (None, None, np.array([40.0, 30.0, 110.0, 95.0])),
    (np.array([[75.0, 62.0]]), np.array([1]), np.array([40.0, 30.0, 110.0, 95.0])),
    (np.array([[20.0, 100.0], [150.0, 20.0], [80.0, 60.0]]), np.array([1, 1, 0]), None),
]


@pytest.mark.slow
def test_lora_merged_checkpoint_loads_in_stock_sam_and_predicts_the_same(lora_adapter, tmp_path):
    out = tmp_path / "merged.pth"
    assert main(["export-model", "--adapter", str(lora_adapter), "--format", "sam", "--out", str(out)]) == 0
    state = torch.load(out, map_location="cpu", weights_only=True)  # tensors only
    assert not any(k.startswith("distiller.") or "lora_" in k for k in state)
    stock = build_sam("tiny")  # segment-anything's own classes, random weights until loaded
    stock.load_state_dict(state, strict=True)

    adapted = load_model_with_adapter("tiny", adapter=lora_adapter, device="cpu")  # what `infosam predict` runs
    base = load_model_with_adapter("tiny", device="cpu")
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(state[key], base.state_dict()[key])  # the LoRA update is in the weights
    image = _image()
    ours, reference, plain = Predictor(adapted, cache_size=0), SamPredictor(stock), SamPredictor(base)
    ours.set_image(image)
    reference.set_image(image)
    plain.set_image(image)
    changed = 0.0
    for points, labels, box in PROMPTS:
        got, got_iou, _ = ours.predict(points, labels, box, multimask_output=False, return_logits=True)
        want, want_iou, _ = reference.predict(points, labels, box, multimask_output=False, return_logits=True)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_iou, want_iou, atol=1e-4)
        changed = max(changed, float(np.abs(plain.predict(points, labels, box, return_logits=True)[0] - want).max()))
    assert changed > 1e-2  # the adapter changes the predictions: the comparison above means something

    # the command itself: `infosam predict --adapter` writes the mask stock SAM predicts
    iio.imwrite(tmp_path / "im.png", image)
    png = tmp_path / "mask.png"
    args = ["predict", str(tmp_path / "im.png"), "--adapter", str(lora_adapter), "--box", "40,30,110,95"]
    assert main([*args, "--out", str(png)]) == 0
    logits = reference.predict(box=np.array([40.0, 30.0, 110.0, 95.0]), multimask_output=False, return_logits=True)
    want_mask = logits[0][0] > 0
    differ = (iio.imread(png) > 0) != want_mask
    assert not (differ & (np.abs(logits[0][0]) > 1e-4)).any()


def _onnx_prompt(points, labels, box, transform, size):
    """SAM's ONNX example: box corners labelled 2, 3; a padding point (0, 0) labelled -1 without a box."""
    coords = [] if points is None else list(points)
    kinds = [] if labels is None else [float(v) for v in labels]
    if box is not None:
        coords += [box[:2], box[2:]]
        kinds += [2.0, 3.0]
    else:
        coords.append(np.zeros(2))
        kinds.append(-1.0)
    coords = transform.apply_coords(np.array(coords, dtype=np.float64), size).astype(np.float32)
    return coords[None], np.array([kinds], dtype=np.float32)


@pytest.mark.slow
def test_adapter_model_onnx_matches_torch_on_five_prompts(adapter_adapter, tmp_path):
    out = tmp_path / "onnx"
    args = ["export-model", "--adapter", str(adapter_adapter), "--format", "onnx", "--multi-mask", "--out", str(out)]
    assert main(args) == 0
    import json

    config = json.loads((out / "onnx.json").read_text())
    assert config["peft_method"] == "adapter" and config["encoder"]["input_size"] == 256
    model = load_model_with_adapter("tiny", adapter=adapter_adapter, device="cpu")
    image = _image()
    reference = SamPredictor(model)
    reference.set_image(image)
    transform = ResizeLongestSide(config["encoder"]["input_size"])
    resized = transform.apply_image(image).astype(np.float32).transpose(2, 0, 1)[None]
    encoder = onnxruntime.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    embedding = encoder.run(None, {"input_image": resized})[0]
    np.testing.assert_allclose(embedding, reference.features.numpy(), atol=1e-4)
    grid = config["decoder"]["mask_input_shape"]
    for points, labels, box in PROMPTS:
        coords, kinds = _onnx_prompt(points, labels, box, transform, image.shape[:2])
        masks, iou, _ = decoder.run(
            None,
            {
                "image_embeddings": embedding,
                "point_coords": coords,
                "point_labels": kinds,
                "mask_input": np.zeros(grid, np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(image.shape[:2], np.float32),
            },
        )
        assert masks.shape == (1, 4, *image.shape[:2])
        multi, multi_iou, _ = reference.predict(points, labels, box, multimask_output=True, return_logits=True)
        single, _, _ = reference.predict(points, labels, box, multimask_output=False, return_logits=True)
        np.testing.assert_allclose(masks[0, 1:], multi, atol=1e-3, rtol=0)
        np.testing.assert_allclose(masks[0, :1], single, atol=1e-3, rtol=0)
        np.testing.assert_allclose(iou[0, 1:], multi_iou, atol=1e-4)


@pytest.mark.parametrize(
    ("method", "formats"),
    [
        ("lora", ["sam", "onnx"]),
        ("bitfit", ["sam", "onnx"]),
        ("decoder", ["sam", "onnx"]),
        ("adapter", ["onnx"]),
        ("adaptformer", ["onnx"]),
        ("su_sam", ["onnx"]),
        ("convlora", []),
        ("hq_sam", []),
    ],
)
def test_formats_that_apply_per_method(random_tiny_sam, method, formats):
    import copy

    model = copy.deepcopy(random_tiny_sam)
    apply_peft(model, method, generator=torch.Generator().manual_seed(0))
    assert formats_for(model) == formats
    for fmt in ("sam", "sam2", "onnx"):
        if fmt not in formats:
            with pytest.raises(ExportFormatError, match=f"PEFT method '{method}' as {fmt}") as info:
                check_format(model, fmt)
            assert "\n" not in str(info.value)
            with pytest.raises(ExportFormatError):
                precheck_format(method, "tiny", fmt)  # the same answer from the adapter's description alone
        else:
            precheck_format(method, "tiny", fmt)


def test_lora_merge_is_the_lora_forward(random_tiny_sam):
    import copy

    model = copy.deepcopy(random_tiny_sam)
    apply_peft(model, "lora", generator=torch.Generator().manual_seed(0), rank=2, alpha=3.0)
    qkv = model.image_encoder.blocks[1].attn.qkv
    with torch.no_grad():
        qkv.lora_B.normal_(generator=torch.Generator().manual_seed(1))
    merged = merged_state_dict(model)
    x = torch.randn(5, qkv.in_features)
    w = merged["image_encoder.blocks.1.attn.qkv.weight"]
    b = merged["image_encoder.blocks.1.attn.qkv.bias"]
    torch.testing.assert_close(x @ w.T + b, qkv(x).detach(), atol=1e-5, rtol=1e-5)
    assert set(merged) == set(random_tiny_sam.state_dict())


def test_export_model_refusals_exit_2_with_one_line(tiny_sam, tmp_path, capsys):
    import copy

    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint

    model = copy.deepcopy(tiny_sam)
    apply_peft(model, "adapter", generator=torch.Generator().manual_seed(0))
    _, adapter = save_peft_checkpoint(model, tmp_path / "adapter")  # untrained: the refusal needs no training
    cases = [
        (["--adapter", str(adapter), "--format", "sam"], "PEFT method 'adapter' as sam"),
        (["--format", "sam2"], "not a sam2 model"),
        (["--format", "onnx", "--out-file"], "writes a folder"),
    ]
    (tmp_path / "file.onnx").write_text("x")
    for extra, message in cases:
        if extra[-1] == "--out-file":
            extra = [*extra[:-1], "--out", str(tmp_path / "file.onnx")]
        else:
            extra = [*extra, "--out", str(tmp_path / "m.pth")]
        assert main(["export-model", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m.pth").exists()


@pytest.mark.parametrize("prefix", ["sam.", "module.sam."])
def test_micro_sam_training_checkpoint_loads_with_model_auto(random_tiny_sam, tmp_path, prefix):
    """micro-sam (torch_em) saves {"model_state": {"sam.<SAM key>": ...}, "optimizer_state": ..., ...}."""
    weights = {k: v.clone() for k, v in random_tiny_sam.state_dict().items()}
    path = tmp_path / "best.pt"
    torch.save(
        {
            "model_state": {prefix + k: v for k, v in weights.items()},
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 1e-5}]},
            "iteration": 10,
            "best_metric": 0.5,
        },
        path,
    )
    assert resolve_model_type("auto", path) == "tiny"
    model = load_model_with_adapter("auto", path, device="cpu")
    assert model.model_type == "tiny"
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_micro_sam_checkpoint_with_other_weights_is_refused_with_the_file_name(random_tiny_sam, tmp_path):
    state = {"sam." + k: v for k, v in random_tiny_sam.state_dict().items() if "mask_decoder" not in k}
    path = tmp_path / "partial.pt"
    torch.save({"model_state": state}, path)
    with pytest.raises(ValueError, match="partial.pt"):
        load_model_with_adapter("tiny", path, device="cpu")


@pytest.mark.slow
def test_sam2_lora_merged_checkpoint_loads_in_stock_sam2(tmp_path):
    """SAM2: Meta's {"model": ...} layout, image parts from the adapted model, memory parts from the base file."""
    pytest.importorskip("sam2")
    from infosam_core.model_export.merge import save_merged_checkpoint
    from infosam_core.models.sam2 import Sam2Model, build_sam2_base, load_sam2

    kind = "sam2.1_hiera_tiny"
    torch.manual_seed(0)
    base_file = tmp_path / "base.pt"
    torch.save({"model": build_sam2_base(kind).state_dict()}, base_file)
    model = load_sam2(kind, base_file)
    apply_peft(model, "lora", generator=torch.Generator().manual_seed(0))
    assert formats_for(model) == ["sam2", "onnx"]
    with torch.no_grad():
        for block in model.image_encoder.trunk.blocks:
            block.attn.qkv.lora_B.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
        model.mask_decoder.iou_token.weight.add_(1.0)  # a trained decoder weight
    out = save_merged_checkpoint(model, tmp_path / "merged.pt")
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    stock = build_sam2_base(kind)
    stock.load_state_dict(checkpoint["model"], strict=True)
    torch.testing.assert_close(stock.sam_mask_decoder.iou_token.weight, model.mask_decoder.iou_token.weight)
    reloaded = Sam2Model(stock, kind).eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model.image_encoder(x), reloaded.image_encoder(x)
    torch.testing.assert_close(got.image_embed, want.image_embed, atol=1e-4, rtol=1e-4)
    base_state = torch.load(base_file, weights_only=True)["model"]
    memory = [k for k in base_state if k.startswith("memory_encoder.")]
    assert memory and all(torch.equal(checkpoint["model"][k], base_state[k]) for k in memory)


@pytest.mark.slow
def test_mobile_sam_lora_merged_checkpoint_loads_in_stock_mobile_sam(tmp_path):
    mobile_sam = pytest.importorskip("mobile_sam")
    from infosam_core.model_export.merge import save_merged_checkpoint
    from infosam_core.models.registry import load_sam

    with pytest.warns(UserWarning):
        model = load_sam("vit_t")  # random weights
    apply_peft(model, "lora", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_B"):
                module.lora_B.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
    assert formats_for(model) == ["sam", "onnx"]
    out = save_merged_checkpoint(model, tmp_path / "vit_t_merged.pth")
    stock = mobile_sam.sam_model_registry["vit_t"]()
    stock.load_state_dict(torch.load(out, map_location="cpu", weights_only=True), strict=True)
    stock.eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(stock.image_encoder(x), model.image_encoder(x), atol=1e-4, rtol=1e-4)

    # ONNX: TinyViT's BatchNorms make the model's mode matter; the export leaves it in eval mode
    from infosam_core.model_export.onnx_files import export_onnx

    result = export_onnx(model, tmp_path / "onnx")
    assert result.encoder_max_diff < 1e-3 and result.decoder_max_diff < 1e-2
    assert not any(m.training for m in model.modules())


def test_micro_sam_checkpoint_with_pickled_objects_is_refused_with_the_way_out(random_tiny_sam, tmp_path):
    """torch_em also pickles its trainer's init arguments: never unpickled; micro-sam's export makes a plain file."""
    import argparse

    path = tmp_path / "best.pt"
    state = {"sam." + k: v for k, v in random_tiny_sam.state_dict().items()}
    torch.save({"model_state": state, "init": argparse.Namespace(model_class="TrainableSAM")}, path)
    with pytest.raises(ValueError, match="export_custom_sam_model"):
        load_model_with_adapter("tiny", path, device="cpu")


def test_onnx_without_the_export_extra_says_how_to_install(random_tiny_sam, tmp_path, monkeypatch):
    import sys

    from infosam_core.model_export.onnx_files import export_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when it is not installed
    with pytest.raises(ImportError, match=r"infosam-studio\[export\]"):
        export_onnx(random_tiny_sam, tmp_path / "onnx")
    assert not (tmp_path / "onnx" / "encoder.onnx").exists()


def test_a_large_encoder_is_written_with_external_data_and_still_checks(random_tiny_sam, tmp_path, monkeypatch):
    """ViT-H's encoder (2.5 GB) is over a protobuf file's 2 GiB: its weights go to ``encoder.onnx.data`` beside the
    graph. The same path is taken here by lowering the threshold on the tiny model; onnxruntime's check runs on the
    written files, and they still load after the folder is moved (the graph names its data by bare file name)."""
    import onnx

    from infosam_core.model_export import onnx_files

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_BYTES", 1 << 20)  # the tiny encoder: ~13 MB; its decoder: ~8 MB
    result = onnx_files.export_onnx(random_tiny_sam, tmp_path / "onnx")
    assert result.encoder_max_diff < 1e-3 and result.decoder_max_diff < 1e-3
    names = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert names == ["decoder.onnx", "decoder.onnx.data", "encoder.onnx", "encoder.onnx.data", "onnx.json"]
    assert (
        (tmp_path / "onnx" / "encoder.onnx").stat().st_size
        < 1 << 20
        < (tmp_path / "onnx" / "encoder.onnx.data").stat().st_size
    )
    (tmp_path / "onnx").rename(tmp_path / "moved")
    onnx.checker.check_model(str(tmp_path / "moved" / "encoder.onnx"))
    onnx_files.check_onnx(random_tiny_sam.eval(), tmp_path / "moved", single_mask=True)


@pytest.mark.slow
def test_sam2_adapter_model_onnx_gives_our_predictors_masks(tmp_path):
    """SAM2 ONNX (issue 28): an Adapter-adapted random SAM2.1-tiny at a 256 input, exported through the CLI's
    writer, run as a consumer does (encoder on the resized, normalised image; decoder on points in the S x S frame;
    low-res logits upsampled to the image): the masks equal our Predictor's on a box and on points."""
    pytest.importorskip("sam2")
    import torch.nn.functional as F

    from infosam_core.model_export.sam2_onnx import sam2_encoder_input
    from infosam_core.model_export.writer import export_model
    from infosam_core.models.sam2 import Sam2Model, build_sam2_base

    torch.manual_seed(0)
    model = Sam2Model(build_sam2_base("sam2.1_hiera_tiny", image_size=256), "sam2.1_hiera_tiny").eval()
    apply_peft(model, "adapter", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # adapters start as the identity: give them weights so the graph must carry them
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
    model.eval()
    assert "onnx" in formats_for(model)
    result = export_model(model, "onnx", tmp_path / "onnx", single_mask=False)
    assert "onnxruntime vs torch" in result.summary
    image = _image()
    h, w = image.shape[:2]
    encoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    feats = dict(
        zip(
            ["high_res_feats_0", "high_res_feats_1", "image_embed"],
            encoder.run(None, {"image": sam2_encoder_input(model, image).numpy()}),
        )
    )
    predictor = Predictor(model)
    predictor.set_image(image)
    scale = np.array([256 / w, 256 / h], np.float32)
    box = np.array([20.0, 15.0, 70.0, 60.0])
    clicks = np.array([[40.0, 30.0], [10.0, 10.0]])
    for coords, labels, kwargs in (
        (box.reshape(2, 2), np.array([2.0, 3.0]), {"box": box}),
        (clicks, np.array([1.0, 0.0]), {"point_coords": clicks, "point_labels": np.array([1, 0])}),
    ):
        low_res, _ = decoder.run(
            None,
            {
                **feats,
                "point_coords": (coords * scale)[None].astype(np.float32),
                "point_labels": labels[None].astype(np.float32),
                "mask_input": np.zeros((1, 1, 64, 64), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
            },
        )
        onnx_masks = F.interpolate(torch.from_numpy(low_res), (h, w), mode="bilinear", align_corners=False)[0] > 0
        ours_masks, _, _ = predictor.predict(multimask_output=True, **kwargs)
        assert ours_masks.shape == tuple(onnx_masks.shape)
        agreement = (ours_masks == onnx_masks.numpy()).mean()
        assert agreement > 0.999, agreement
