"""The stack view's Qt-free state (issue 27): propagate a preview, accept it, correct the object from another
slice, undo (the preview first, then the saved changes), export."""

from __future__ import annotations

import numpy as np
import tifffile
from scipy import ndimage

from infosam_app.state.stack_session import StackSession
from infosam_core.annotation.project import Project
from infosam_core.data.synthetic_stacks import ellipsoid_stack
from infosam_core.inference.propagation import SlicePrompt
from infosam_core.io.stacks import read_label_stack


class BrightComponent:
    """A stand-in model: the bright connected component under the point (or the box centre)."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask_output=True):
        x, y = points[0] if points is not None else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        components, _ = ndimage.label(self.rgb[..., 0] > 128)
        label = components[int(round(y)), int(round(x))]
        mask = components == label if label else np.zeros(components.shape, bool)
        return mask[None], np.array([0.9]), np.zeros((1, 8, 8), np.float32)


def test_preview_accept_correct_undo_export(tmp_path):
    data = ellipsoid_stack(seed=21, shape=(10, 128, 128), n_objects=1, noise=0.0)
    tifffile.imwrite(tmp_path / "s.tif", data.image, metadata={"axes": "TYX"})
    state = StackSession(Project.create(tmp_path / "proj"))
    stack = state.open(tmp_path / "s.tif")
    assert stack.kind == "T" and not state.labels().any()
    truth = data.labels == 1
    planes = np.flatnonzero(truth.any(axis=(1, 2)))
    start = int(planes[len(planes) // 2])

    pending = state.propagate(BrightComponent(), start, SlicePrompt(box=data.box(1, start)))
    state.show_pending(pending)
    assert not state.labels().any()  # a preview is not saved
    obj = state.accept(model="fake")
    assert obj.id == 1 and set(obj.prompts) == {start}
    accepted = state.labels() == 1
    assert accepted[start].any()

    # correct the object from the last slice it spans, backward only: later slices are kept
    last = int(np.flatnonzero(accepted.any(axis=(1, 2)))[-1])
    ys, xs = np.nonzero(accepted[last])
    point = SlicePrompt(points=[[float(xs.mean()), float(ys.mean())]])
    assert state.object_at(last, int(ys.mean()), int(xs.mean())) == 1
    state.show_pending(state.propagate(BrightComponent(), last, point, direction="backward", corrects=1))
    assert state.undo() == "preview" and state.pending is None  # the preview goes first
    state.show_pending(state.propagate(BrightComponent(), last, point, direction="backward", corrects=1))
    corrected = state.accept()
    assert set(corrected.prompts) == {start, last}
    assert state.undo() == "correct object 1"
    assert set(state.objects.annotations(state.entry.key).objects[1].prompts) == {start}
    out = state.export(tmp_path / "labels.zarr")
    np.testing.assert_array_equal(read_label_stack(out) == 1, accepted)
    assert state.undo() == "accept object 1" and not state.labels().any()
