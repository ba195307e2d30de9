"""A composite pass's VACE inputs as the worker builds them from decoded sources."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wanserve.editing import EditPlan
from wanserve.errors import ModelUnavailable
from wanserve.workers.inputs import Sources
from wanserve.workers.translation import composite_inputs

W, H = 32, 16


def frames(n: int, value: int = 0) -> np.ndarray:
    out = np.full((n, H, W, 3), value, dtype=np.uint8)
    out[:, :, :2] = np.arange(n, dtype=np.uint8)[:, None, None, None]  # frame i marked i
    return out


def test_every_extension_input_fits_in_one_pass() -> None:
    """First and last frame and two long clips: the known frames share half the pass."""
    sources = Sources(
        first_frame=Image.new("RGB", (W, H), "red"),
        last_frame=Image.new("RGB", (W, H), "blue"),
        first_clip=frames(120),
        last_clip=frames(120),
    )
    built = composite_inputs(
        EditPlan(function="video_extension"), sources, num_frames=81, width=W, height=H
    )
    assert built.mask is not None
    known = int((built.mask.reshape(81, -1).max(axis=1) == 0).sum())
    assert 0 < known <= 40  # at most half the pass is given; the model makes the rest


def test_a_window_past_the_source_holds_its_last_frame() -> None:
    from wanserve.workers.translation import _window

    sources = Sources(video=frames(10))
    window = _window(sources, 50).video
    assert window is not None and len(window) == 1 and window[0, 0, 0, 0] == 9
    built = composite_inputs(
        EditPlan(function="video_outpainting"),
        _window(sources, 50),
        num_frames=5,
        width=W,
        height=H,
    )
    assert built.video is not None and built.video.shape == (5, H, W, 3)


def test_depth_without_an_annotator_on_this_worker_is_a_configuration_error() -> None:
    with pytest.raises(ModelUnavailable, match="depth_annotator"):
        composite_inputs(
            EditPlan(function="video_repainting", control="depth"),
            Sources(video=frames(5)),
            num_frames=5,
            width=W,
            height=H,
        )
