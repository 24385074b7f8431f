"""Large inputs read by region: zarr / OME-Zarr and tiled TIFF (LazyRegions), label output as OME-Zarr."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from infosam_core.annotation.export import read_label_image
from infosam_core.cli import main
from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.io.images import MAX_PIXELS_ENV, ImageError, read_image, to_rgb_uint8
from infosam_core.io.large_images import open_regions, read_labels_zarr, write_labels_zarr


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One 16-bit image as a tiled TIFF, a plain zarr array and an OME-Zarr group (T, C, Z, Y, X)."""
    folder = tmp_path_factory.mktemp("stored")
    image = np.random.default_rng(0).integers(0, 4000, (700, 900), dtype=np.uint16)
    tifffile.imwrite(folder / "image.tif", image, tile=(256, 256))
    plain = zarr.open_array(
        str(folder / "image.zarr"), mode="w", shape=image.shape, dtype=image.dtype, chunks=(256, 256)
    )
    plain[:] = image
    group = zarr.open_group(str(folder / "ome.zarr"), mode="w")
    level = group.create_array("0", shape=(1, 1, 1, *image.shape), dtype=image.dtype, chunks=(1, 1, 1, 256, 256))
    level[:] = image[None, None, None]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
    return folder, image


def test_tiff_zarr_and_ome_zarr_read_the_same_regions(stored):
    folder, image = stored
    sources = [open_regions(folder / name) for name in ("image.tif", "image.zarr", "ome.zarr")]
    expected = to_rgb_uint8(image)  # the same intensity mapping as a whole image's (0.5 / 99.5 percentiles)
    for source in sources:
        assert source.shape == (700, 900)
        region = source.read_rgb(100, 200, 356, 456)
        assert region.shape == (256, 256, 3) and region.dtype == np.uint8
        assert np.abs(region.astype(int) - expected[100:356, 200:456].astype(int)).max() <= 1
        assert np.array_equal(source.read_rgb(0, 0, 700, 900, 4), sources[0].read_rgb(0, 0, 700, 900, 4))


def test_region_reads_count_only_what_they_read_against_the_pixel_guard(stored, monkeypatch):
    folder, _ = stored
    monkeypatch.setenv(MAX_PIXELS_ENV, "200000")  # 0.2 Mpx: the 0.63 Mpx image may not be decoded whole
    with pytest.raises(ImageError, match="above the limit"):
        read_image(folder / "image.tif")
    for name in ("image.tif", "image.zarr"):
        source = open_regions(folder / name)
        assert source.read_rgb(0, 0, 256, 256).shape == (256, 256, 3)  # a tile: allowed
        with pytest.raises(ImageError, match="a region of it"):
            source.read_rgb(0, 0, 700, 900)


def test_a_chunk_above_the_pixel_guard_is_refused_before_any_read(tmp_path, monkeypatch):
    """Any read of a strip or tile decodes all of it: a file whose chunks are above the limit is a bomb however
    small the region asked for; the same pixels stored in small tiles are fine."""
    monkeypatch.setenv(MAX_PIXELS_ENV, "200000")
    image = np.zeros((600, 600), np.uint16)
    tifffile.imwrite(tmp_path / "strip.tif", image, rowsperstrip=600, compression="zlib")  # one 0.36 Mpx strip
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(256, 256), compression="zlib")
    zarr.open_array(str(tmp_path / "big_chunks.zarr"), mode="w", shape=(600, 600), chunks=(600, 600), dtype="u1")
    for name in ("strip.tif", "big_chunks.zarr"):
        with pytest.raises(ImageError, match=rf"{name}: stored in chunks .* of 600 x 600 pixels.*{MAX_PIXELS_ENV}"):
            open_regions(tmp_path / name)
    assert open_regions(tmp_path / "tiled.tif").read_rgb(0, 0, 100, 100).shape == (100, 100, 3)


def test_rgb_tiff_regions_are_the_pixels_and_bad_stores_are_refused(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, tile=(128, 128), photometric="rgb")
    source = open_regions(tmp_path / "rgb.tif")
    assert np.array_equal(source.read_rgb(10, 20, 200, 300), rgb[10:200, 20:300])
    assert np.array_equal(source.read_rgb(0, 0, 300, 400, 3), rgb[::3, ::3])
    with pytest.raises(ValueError, match="not inside"):
        source.read_rgb(0, 0, 301, 10)
    cube = zarr.open_array(str(tmp_path / "cube.zarr"), mode="w", shape=(5, 40, 50, 60), dtype="uint8")
    with pytest.raises(ImageError, match="not one 2-D image"):
        open_regions(tmp_path / "cube.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ImageError, match="only from zarr"):
        open_regions(tmp_path / "folder")
    del cube


def test_label_zarr_round_trip_and_overwrite(tmp_path):
    labels = np.random.default_rng(2).integers(0, 300, (600, 500)).astype(np.uint16)
    path = write_labels_zarr(tmp_path / "l.ome.zarr", labels)
    assert np.array_equal(read_labels_zarr(path), labels)
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    write_labels_zarr(path, labels[::-1].copy())  # replaced whole
    assert np.array_equal(read_labels_zarr(path), labels[::-1])
    assert [p.name for p in tmp_path.iterdir()] == ["l.ome.zarr"]  # no temporary left


@pytest.fixture(scope="module")
def scene_stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    image, truth = nuclei_scene(NucleiSceneConfig(size=(320, 360), n_objects=40), seed=8)
    tifffile.imwrite(folder / "scene.tif", image, tile=(128, 128))
    store = zarr.open_array(
        str(folder / "scene.zarr"), mode="w", shape=image.shape, dtype=image.dtype, chunks=(100, 100)
    )
    store[:] = image
    return folder, truth


@pytest.mark.slow
def test_predict_on_a_zarr_store_equals_the_tiff(scene_stores, tmp_path):
    folder, truth = scene_stores
    ys, xs = np.nonzero(truth == 5)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    for name in ("scene.tif", "scene.zarr"):
        assert main(["predict", str(folder / name), "--box", box, "--out", str(tmp_path / f"{name}.png")]) == 0
    a, b = iio.imread(tmp_path / "scene.tif.png"), iio.imread(tmp_path / "scene.zarr.png")
    assert a.shape == (320, 360) and np.array_equal(a, b) and a.any()


@pytest.mark.slow
def test_segment_a_zarr_store_gives_the_tiffs_labels_and_writes_ome_zarr(scene_stores, tmp_path):
    folder, truth = scene_stores
    common = ["--tile-shape", "128", "--halo", "32", "--points-per-side", "8"]
    assert main(["segment", str(folder / "scene.tif"), *common, "--out", str(tmp_path / "tif")]) == 0
    assert (
        main(["segment", str(folder / "scene.zarr"), *common, "--format", "zarr", "--out", str(tmp_path / "zarr")]) == 0
    )
    from_tiff = read_label_image(tmp_path / "tif" / "scene_labels.tif")
    from_zarr = read_labels_zarr(tmp_path / "zarr" / "scene_labels.zarr")
    assert from_tiff.shape == (320, 360) and from_tiff.max() >= 10
    assert np.array_equal(from_tiff, from_zarr)
    coco = json.loads((tmp_path / "zarr" / "coco.json").read_text())
    assert len(coco["annotations"]) == int(from_zarr.max())
    # a re-run finds the zarr labels done
    assert (
        main(["segment", str(folder / "scene.zarr"), *common, "--format", "zarr", "--out", str(tmp_path / "zarr")]) == 0
    )
