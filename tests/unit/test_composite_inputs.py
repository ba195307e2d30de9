"""The VACE inputs built for each DashScope VACE function: shapes, which frames and pixels are
kept or generated, gray where generated, references letterboxed or cover-cropped, edges."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wanserve.workers.composite import (
    GRAY,
    edges,
    extension,
    fit_frames,
    masked_edit,
    outpainting,
    references,
    repainting,
)

W, H, F = 16, 16, 9


def solid(n: int, value: int, w: int = W, h: int = H) -> np.ndarray:
    return np.full((n, h, w, 3), value, dtype=np.uint8)


def numbered(n: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i is solid 10 * (i + 1): which source frame landed where is readable."""
    return np.stack([np.full((h, w, 3), 10 * (i + 1), dtype=np.uint8) for i in range(n)])


def check_layout(video: np.ndarray | None, mask: np.ndarray | None, n: int = F) -> None:
    assert video is not None and mask is not None
    assert video.shape == (n, H, W, 3) and video.dtype == np.uint8
    assert mask.shape == (n, H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert (video[mask == 255] == GRAY).all()  # every generated pixel is gray


def test_fit_frames_cover_crops_takes_the_first_and_repeats_the_last() -> None:
    wide = numbered(3, w=32, h=16)
    wide[:, :, :8] = 0  # the left and right quarters are cropped away
    wide[:, :, 24:] = 0
    out = fit_frames(wide, 5, 8, 8)
    assert out.shape == (5, 8, 8, 3) and out.dtype == np.uint8
    assert [int(f[4, 4, 0]) for f in out] == [10, 20, 30, 30, 30]
    assert int(out.min()) > 0
    assert [int(f[0, 0, 0]) for f in fit_frames(numbered(4), 2, W, H)] == [10, 20]


def test_extension_first_clip_and_last_frame() -> None:
    last = Image.new("RGB", (32, 16), (200, 100, 50))
    out = extension(num_frames=F, width=W, height=H, first_clip=numbered(3), last_frame=last)
    check_layout(out.video, out.mask)
    assert out.video is not None and out.mask is not None
    keep = [i for i in range(F) if (out.mask[i] == 0).all()]
    generate = [i for i in range(F) if (out.mask[i] == 255).all()]
    assert keep == [0, 1, 2, F - 1] and generate == [3, 4, 5, 6, 7]
    assert [int(out.video[i, 0, 0, 0]) for i in range(3)] == [10, 20, 30]
    assert tuple(out.video[F - 1, 8, 8]) == (200, 100, 50)
    assert out.references == () and out.conditioning_scale == 1.0


def test_extension_orders_known_frames_at_both_ends() -> None:
    first = Image.new("RGB", (W, H), (1, 1, 1))
    last = Image.new("RGB", (W, H), (2, 2, 2))
    out = extension(
        num_frames=F,
        width=W,
        height=H,
        first_frame=first,
        first_clip=numbered(2),
        last_clip=numbered(2),
        last_frame=last,
    )
    check_layout(out.video, out.mask)
    assert out.video is not None
    firsts = [int(frame[0, 0, 0]) for frame in out.video]
    assert firsts == [1, 10, 20, GRAY, GRAY, GRAY, 10, 20, 2]


def test_extension_with_only_a_last_clip_keeps_the_end() -> None:
    out = extension(num_frames=F, width=W, height=H, last_clip=numbered(2, w=24, h=24))
    check_layout(out.video, out.mask)
    assert out.mask is not None
    assert [int(m.max()) for m in out.mask] == [255] * 7 + [0, 0]


def test_extension_errors() -> None:
    with pytest.raises(ValueError, match="needs a first or last"):
        extension(num_frames=F, width=W, height=H)
    with pytest.raises(ValueError, match="leave none"):
        extension(num_frames=F, width=W, height=H, first_clip=numbered(8), last_clip=numbered(1))
    with pytest.raises(ValueError, match="not RGB uint8"):
        extension(num_frames=F, width=W, height=H, first_clip=numbered(2).astype(np.float32))


def test_outpainting_places_the_source_in_its_rectangle() -> None:
    source = numbered(3)
    out = outpainting(
        source, num_frames=5, width=W, height=H, top=1.0, bottom=1.0, left=1.5, right=1.5
    )
    check_layout(out.video, out.mask, n=5)
    assert out.video is not None and out.mask is not None
    keep = np.zeros((H, W), dtype=bool)
    keep[:, 4:12] = True  # the middle half of the width, the full height
    assert ((out.mask == 0) == keep).all()
    assert [int(f[8, 8, 0]) for f in out.video] == [10, 20, 30, 30, 30]


def test_outpainting_uneven_scales() -> None:
    # The canvas is 2 source widths, the source on the right half; the height grows by a
    # quarter above, so the source spans the last 1 / 1.25 of the 20 rows: rows 4..19.
    out = outpainting(
        solid(1, 90), num_frames=1, width=W, height=20, top=1.25, bottom=1.0, left=2.0, right=1.0
    )
    assert out.mask is not None and out.video is not None
    assert out.mask.shape == (1, 20, W) and out.video.shape == (1, 20, W, 3)
    rows, cols = np.nonzero(out.mask[0] == 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 19, 8, 15)
    assert (out.video[0][out.mask[0] == 0] == 90).all()
    with pytest.raises(ValueError, match=r"left scale 2\.5"):
        outpainting(
            solid(1, 90), num_frames=1, width=W, height=H, top=1, bottom=1, left=2.5, right=1
        )


def test_masked_edit_from_mask_frame_id_on() -> None:
    mask_image = Image.new("L", (32, 32), 0)
    mask_image.paste(255, (12, 12, 20, 20))  # the middle quarter, drawn on a 32x32 frame
    out = masked_edit(
        solid(4, 200, w=32, h=32), mask_image, num_frames=5, width=W, height=H, mask_frame_id=3
    )
    check_layout(out.video, out.mask, n=5)
    assert out.video is not None and out.mask is not None
    assert [int(m.max()) for m in out.mask] == [0, 0, 255, 255, 255]
    region = np.zeros((H, W), dtype=bool)
    region[6:10, 6:10] = True
    assert all(((m == 255) == region).all() for m in out.mask[2:])
    assert (out.video[out.mask == 0] == 200).all()


def test_masked_edit_dilation_grows_the_mask() -> None:
    mask_image = Image.new("L", (W, H), 0)
    mask_image.putpixel((8, 8), 255)
    plain = masked_edit(solid(1, 50), mask_image, num_frames=1, width=W, height=H)
    grown = masked_edit(
        solid(1, 50), mask_image, num_frames=1, width=W, height=H, expand_ratio=2 / W
    )
    assert plain.mask is not None and grown.mask is not None
    assert int((plain.mask == 255).sum()) == 1
    rows, cols = np.nonzero(grown.mask[0] == 255)
    assert len(rows) == 25 and (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 6, 10)
    check_layout(grown.video, grown.mask, n=1)


def test_masked_edit_with_a_mask_video_frame_by_frame() -> None:
    mask_video = np.zeros((2, H, W, 3), dtype=np.uint8)
    mask_video[0, :, :8] = 255  # left half, then the right half (held for later frames)
    mask_video[1, :, 8:] = 130  # over the threshold
    mask_video[1, :4, 8:] = 127  # under it
    out = masked_edit(solid(3, 60), None, num_frames=4, width=W, height=H, mask_video=mask_video)
    check_layout(out.video, out.mask, n=4)
    assert out.mask is not None
    assert (out.mask[0, :, :8] == 255).all() and (out.mask[0, :, 8:] == 0).all()
    for m in out.mask[1:]:
        assert (m[4:, 8:] == 255).all() and (m[:4].max() == 0) and (m[:, :8].max() == 0)


def test_masked_edit_errors() -> None:
    image = Image.new("L", (W, H), 255)
    with pytest.raises(ValueError, match="exactly one"):
        masked_edit(solid(1, 0), None, num_frames=1, width=W, height=H)
    with pytest.raises(ValueError, match="exactly one"):
        masked_edit(solid(1, 0), image, num_frames=1, width=W, height=H, mask_video=solid(1, 0))
    with pytest.raises(ValueError, match="mask frame 3"):
        masked_edit(solid(1, 0), image, num_frames=2, width=W, height=H, mask_frame_id=3)


def test_repainting_is_an_edge_control_video() -> None:
    source = solid(2, 0, w=32, h=32)
    source[:, :, 16:] = 255
    out = repainting(source, num_frames=5, width=W, height=H, strength=0.4)
    assert out.video is not None and out.mask is not None
    assert out.video.shape == (5, H, W, 3) and out.video.dtype == np.uint8
    assert (out.mask == 255).all() and out.mask.shape == (5, H, W)
    assert out.conditioning_scale == 0.4
    assert set(np.unique(out.video)) == {0, 255}
    with pytest.raises(ValueError, match="strength"):
        repainting(source, num_frames=5, width=W, height=H, strength=1.5)


def test_edges_lie_on_the_boundary_only() -> None:
    frames = solid(2, 0)
    frames[:, :, 8:] = 255
    lines = edges(frames)
    assert lines.shape == frames.shape and lines.dtype == np.uint8
    columns = sorted({int(c) for c in np.nonzero(lines[..., 0])[2]})
    assert columns == [7, 8]  # the last black and the first white column
    assert (lines[:, :, 7:9] == 255).all()  # every row, every channel
    assert edges(solid(1, 90)).max() == 0  # flat: no lines, not even at the frame's border


def test_references_obj_letterboxed_on_white_bg_cover_cropped() -> None:
    tall = Image.new("RGB", (8, 16), (255, 0, 0))
    wide = Image.new("RGB", (64, 16), (0, 0, 255))
    wide.paste((0, 255, 0), (24, 0, 40, 16))  # the middle quarter: all the crop keeps
    obj, bg = references([tall, wide], ["obj", "bg"], width=W, height=H)
    assert obj.size == bg.size == (W, H) and obj.mode == bg.mode == "RGB"
    o = np.asarray(obj)
    assert (o[:, :4] == 255).all() and (o[:, 12:] == 255).all()  # white bands left and right
    assert (o[:, 5:11] == (255, 0, 0)).all()
    assert (np.asarray(bg) == (0, 255, 0)).all()
    (default,) = references([tall], None, width=W, height=H)
    assert np.array_equal(np.asarray(default), o)


def test_references_transparency_becomes_white() -> None:
    image = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    (ref,) = references([image], ["obj"], width=W, height=H)
    assert (np.asarray(ref) == 255).all()


def test_references_errors() -> None:
    image = Image.new("RGB", (W, H))
    with pytest.raises(ValueError, match="1 roles for 2"):
        references([image, image], ["obj"], width=W, height=H)
    with pytest.raises(ValueError, match="'fg'"):
        references([image], ["fg"], width=W, height=H)
