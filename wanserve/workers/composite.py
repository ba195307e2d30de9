"""The VACE inputs (source video, mask, reference images, conditioning scale) for each
function of DashScope's VACE editing model, built from decoded media with numpy and PIL.

VACE's convention: a source video and a mask of the output's shape. A pixel to generate is
mid-gray (127) in the video and 255 in the mask; a known pixel carries its real value and 0 in
the mask. A control video (edges, depth, pose) is the whole video with a mask of 255 everywhere:
the model follows it instead of keeping it. Reference images are prepended as extra frames.

Everything here is torch-free and stays uint8; frames are resized one at a time, so no float
copy of a whole video is ever made. Sizes are the denoising size (`width` x `height`) and
`num_frames` counts frames at the checkpoint's frame rate: clips arrive already resampled to
it. Arguments out of range raise `ValueError`; callers check a request's limits first and
report them in DashScope's words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from wanserve.media.image import fit

Frames = NDArray[np.uint8]  # (frames, height, width, 3), RGB
Masks = NDArray[np.uint8]  # (frames, height, width): 255 generate, 0 keep

GRAY = 127  # a pixel to generate, in the source video
GENERATE = 255  # ... and in the mask
KEEP = 0
ROLES = ("obj", "bg")
# Sobel magnitude (in gray levels: the kernels are divided by 4) from which a pixel is a line.
EDGE_THRESHOLD = 32.0


@dataclass(frozen=True)
class CompositeInputs:
    """What `GenerationRequest` takes as `video`, `mask`, `reference_images` and
    `conditioning_scale`."""

    video: Frames | None
    mask: NDArray[np.uint8] | None
    references: tuple[Image.Image, ...]
    conditioning_scale: float = 1.0


def references(
    images: Sequence[Image.Image], roles: Sequence[str] | None, *, width: int, height: int
) -> tuple[Image.Image, ...]:
    """Reference images prepared as VACE expects, each `width` x `height` RGB. Role "obj" (the
    default): the subject scaled to fit inside the frame, keeping its aspect, centred on a
    white canvas (transparent pixels become white). Role "bg": scaled to cover the frame and
    centre-cropped. `roles`, when given, has one entry per image."""
    _check_size(width, height)
    if roles is None:
        roles = ["obj"] * len(images)
    if len(roles) != len(images):
        raise ValueError(f"{len(roles)} roles for {len(images)} reference images")
    prepared = []
    for image, role in zip(images, roles, strict=True):
        if role not in ROLES:
            raise ValueError(f"reference role {role!r} is not one of {', '.join(ROLES)}")
        rgb = _on_white(image)
        if role == "bg":
            prepared.append(fit(rgb, width, height))
        else:
            prepared.append(
                ImageOps.pad(
                    rgb, (width, height), method=Image.Resampling.LANCZOS, color=(255, 255, 255)
                )
            )
    return tuple(prepared)


def extension(
    *,
    num_frames: int,
    width: int,
    height: int,
    first_clip: Frames | None = None,
    last_clip: Frames | None = None,
    first_frame: Image.Image | None = None,
    last_frame: Image.Image | None = None,
) -> CompositeInputs:
    """video_extension (and a first clip's continuation). Known frames go at the start
    (`first_frame`, then `first_clip`'s frames) and at the end (`last_clip`'s frames, then
    `last_frame`), each cover-cropped to `width` x `height`, with mask 0; every other frame is
    gray with mask 255. At least one input is needed, and at least one frame must be left to
    generate."""
    _check_size(width, height, num_frames)
    start: list[Frames] = []
    end: list[Frames] = []
    if first_frame is not None:
        start.append(_image_frames(first_frame, width, height))
    if first_clip is not None:
        start.append(_resized(first_clip, width, height, "first clip"))
    if last_clip is not None:
        end.append(_resized(last_clip, width, height, "last clip"))
    if last_frame is not None:
        end.append(_image_frames(last_frame, width, height))
    if not start and not end:
        raise ValueError("an extension needs a first or last frame or clip")
    n_start = sum(len(f) for f in start)
    n_end = sum(len(f) for f in end)
    if n_start + n_end >= num_frames:
        raise ValueError(
            f"{n_start + n_end} known frames leave none of the {num_frames} frames to generate"
        )
    video = np.full((num_frames, height, width, 3), GRAY, dtype=np.uint8)
    mask = np.full((num_frames, height, width), GENERATE, dtype=np.uint8)
    at = 0
    for frames in start:
        video[at : at + len(frames)] = frames
        at += len(frames)
    mask[:at] = KEEP
    at = num_frames - n_end
    mask[at:] = KEEP
    for frames in end:
        video[at : at + len(frames)] = frames
        at += len(frames)
    return CompositeInputs(video=video, mask=mask, references=())


def outpainting(
    video: Frames,
    *,
    num_frames: int,
    width: int,
    height: int,
    top: float,
    bottom: float,
    left: float,
    right: float,
) -> CompositeInputs:
    """video_outpainting. Each scale in [1, 2] grows the source frame (w x h) on its side by
    (scale - 1) times the frame: the canvas is w * (left + right - 1) by h * (top + bottom - 1)
    with the source at ((left - 1) * w, (top - 1) * h), and the whole canvas is then scaled to
    `width` x `height`. So the source spans the fraction 1 / (left + right - 1) of the width
    and 1 / (top + bottom - 1) of the height, exactly, whatever `width` x `height` is: it keeps
    its aspect only where `width` / `height` is the canvas's aspect (the caller's choice of
    size). Source pixels (mask 0) fill their rectangle; the rest is gray (mask 255).

    `video` has at least one frame, at the checkpoint's frame rate: its first `num_frames`
    frames are used, and the last one is repeated if it is shorter."""
    _check_size(width, height, num_frames)
    _check_frames(video, "video")
    for name, scale in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if not 1.0 <= scale <= 2.0:
            raise ValueError(f"the {name} scale {scale} is not in [1, 2]")
    x0, x1 = _span(width, left, right)
    y0, y1 = _span(height, top, bottom)
    out = np.full((num_frames, height, width, 3), GRAY, dtype=np.uint8)
    mask = np.full((num_frames, height, width), GENERATE, dtype=np.uint8)
    mask[:, y0:y1, x0:x1] = KEEP
    used = min(len(video), num_frames)
    for i in range(used):
        frame = Image.fromarray(video[i])
        if frame.size != (x1 - x0, y1 - y0):
            frame = frame.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
        out[i, y0:y1, x0:x1] = np.asarray(frame)
    out[used:] = out[used - 1]
    return CompositeInputs(video=out, mask=mask, references=())


def masked_edit(
    video: Frames,
    mask_image: Image.Image | None,
    *,
    num_frames: int,
    width: int,
    height: int,
    mask_video: Frames | None = None,
    expand_ratio: float = 0.0,
    mask_frame_id: int = 1,
) -> CompositeInputs:
    """video_edit with a fixed mask (white: edit, black: keep; thresholded at 128). Either
    `mask_image`, applied to every frame from `mask_frame_id` (1-based, counting frames of
    `video`) on, earlier frames keeping everything; or `mask_video`, frame by frame (its last
    frame repeated if it is shorter; `mask_frame_id` does not apply). The mask gets the frames'
    cover-crop with nearest-neighbour sampling, so it stays aligned with them, and is then grown
    by `expand_ratio * max(width, height)` pixels in each direction (a square dilation; 0: as
    drawn). Masked pixels are gray in the video and 255 in the mask.

    `video` is cover-cropped to `width` x `height`; a shorter one repeats its last frame."""
    _check_size(width, height, num_frames)
    if (mask_image is None) == (mask_video is None):
        raise ValueError("an edit needs exactly one of a mask image and a mask video")
    if not 0.0 <= expand_ratio <= 1.0:
        raise ValueError(f"expand ratio {expand_ratio} is not in [0, 1]")
    if mask_image is not None and not 1 <= mask_frame_id <= num_frames:
        raise ValueError(f"mask frame {mask_frame_id} is not one of the {num_frames} frames")
    radius = round(expand_ratio * max(width, height))
    out = fit_frames(video, num_frames, width, height)
    mask = np.zeros((num_frames, height, width), dtype=np.uint8)
    if mask_image is not None:
        region = _mask_region(mask_image, width, height, radius)
        mask[mask_frame_id - 1 :, region] = GENERATE
        out[mask_frame_id - 1 :, region] = GRAY
    else:
        assert mask_video is not None
        _check_frames(mask_video, "mask video")
        used = min(len(mask_video), num_frames)
        for i in range(used):
            region = _mask_region(Image.fromarray(mask_video[i]), width, height, radius)
            mask[i, region] = GENERATE
            out[i, region] = GRAY
        mask[used:, region] = GENERATE
        out[used:, region] = GRAY
    return CompositeInputs(video=out, mask=mask, references=())


def repainting(
    video: Frames,
    *,
    num_frames: int,
    width: int,
    height: int,
    strength: float,
    control: Frames | None = None,
) -> CompositeInputs:
    """video_repainting: the control video is `control` when an annotator drew one (depth
    maps), else the scribble stand-in, `edges` of the source frames; either is cover-cropped
    to the size (a shorter video repeats its last frame). The mask is 255 everywhere (follow
    the control, keep nothing), and `strength` (0..1) is the conditioning scale."""
    _check_size(width, height, num_frames)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength {strength} is not in [0, 1]")
    if control is None:
        control = edges(fit_frames(video, num_frames, width, height))
    else:
        control = fit_frames(control, num_frames, width, height)
    mask = np.full((num_frames, height, width), GENERATE, dtype=np.uint8)
    return CompositeInputs(video=control, mask=mask, references=(), conditioning_scale=strength)


def edges(frames: Frames) -> Frames:
    """The scribble annotator's stand-in: white lines on black where each frame's luminance
    changes sharply (Sobel magnitude, in gray levels, at least `EDGE_THRESHOLD`; the border
    is extended, so a frame's edge is no line), as RGB frames of the same shape."""
    _check_frames(frames, "frames")
    out = np.zeros(frames.shape, dtype=np.uint8)
    for i, frame in enumerate(frames):
        gray = np.asarray(Image.fromarray(frame).convert("L"), dtype=np.float32)
        p = np.pad(gray, 1, mode="edge")
        # Sobel, divided by 4 so a step from 0 to v gives v.
        gx = (
            (p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2]) + (p[2:, 2:] - p[2:, :-2])
        ) / 4
        gy = (
            (p[2:, :-2] - p[:-2, :-2]) + 2 * (p[2:, 1:-1] - p[:-2, 1:-1]) + (p[2:, 2:] - p[:-2, 2:])
        ) / 4
        out[i][gx * gx + gy * gy >= EDGE_THRESHOLD**2] = 255
    return out


def fit_frames(frames: Frames, num_frames: int, width: int, height: int) -> Frames:
    """`num_frames` frames of `width` x `height`: the first ones of `frames`, each scaled to
    cover the size and centre-cropped, the last repeated if there are too few."""
    _check_size(width, height, num_frames)
    _check_frames(frames, "frames")
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    used = min(len(frames), num_frames)
    for i in range(used):
        out[i] = _fit_array(frames[i], width, height)
    out[used:] = out[used - 1]
    return out


def _resized(frames: Frames, width: int, height: int, name: str) -> Frames:
    _check_frames(frames, name)
    return fit_frames(frames, len(frames), width, height)


def _image_frames(image: Image.Image, width: int, height: int) -> Frames:
    return np.asarray(fit(_on_white(image), width, height))[None]


def _fit_array(frame: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(fit(Image.fromarray(frame), width, height))


def _on_white(image: Image.Image) -> Image.Image:
    """`image` as RGB, transparent pixels white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _mask_region(image: Image.Image, width: int, height: int, radius: int) -> NDArray[np.bool_]:
    """Where `image` (white: edit) is at least 128 after the frames' cover-crop, grown by
    `radius` pixels."""
    gray = ImageOps.fit(image.convert("L"), (width, height), method=Image.Resampling.NEAREST)
    return _dilate(np.asarray(gray) >= 128, radius)


def _dilate(region: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """`region` grown by a (2 radius + 1)-pixel square: a running window sum along each axis
    (separable, linear in the pixels whatever the radius)."""
    if radius <= 0:
        return region
    for axis in (0, 1):
        counts = np.cumsum(region, axis=axis, dtype=np.int32)
        counts = np.concatenate([np.zeros_like(counts.take([0], axis=axis)), counts], axis=axis)
        n = region.shape[axis]
        index = np.arange(n)
        hi = np.minimum(index + radius + 1, n)
        lo = np.maximum(index - radius, 0)
        region = (counts.take(hi, axis=axis) - counts.take(lo, axis=axis)) > 0
    return region


def source_size(
    width: int, height: int, *, top: float, bottom: float, left: float, right: float
) -> tuple[int, int]:
    """(width, height) the outpainting source occupies on a `width` x `height` canvas: the
    size to decode it at (so a large source is never held at its own size)."""
    x0, x1 = _span(width, left, right)
    y0, y1 = _span(height, top, bottom)
    return x1 - x0, y1 - y0


def _span(size: int, before: float, after: float) -> tuple[int, int]:
    """Where the source lies along a side of `size` pixels grown by `before` and `after`."""
    grown = before + after - 1
    start = math.floor(size * (before - 1) / grown + 0.5)
    end = math.floor(size * before / grown + 0.5)
    return start, max(end, start + 1)


def _check_size(width: int, height: int, num_frames: int = 1) -> None:
    if width < 1 or height < 1 or num_frames < 1:
        raise ValueError(f"{num_frames} frames of {width}x{height} is no video")


def _check_frames(frames: Frames, name: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(
            f"the {name} is {frames.dtype} of shape {frames.shape}, not RGB uint8 frames"
        )
