"""Resolve a spec's input references into decoded media, and size image-driven specs.

Every reference a client sent (`img_url`, `first_frame_url`, `last_frame_url`, `audio_url`)
is turned into bytes here and nowhere else: base64 data URIs are decoded in place, http(s)
URLs go through the one guarded fetcher, and `oss://` references come from the upload store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from wanserve.engine.families import Kind
from wanserve.errors import InvalidParameter, InvalidURL
from wanserve.media.audio import AudioClip, AudioLimits, decode_audio
from wanserve.media.clips import VideoLimits, decode_video, probe_video
from wanserve.media.datauri import parse_data_uri
from wanserve.media.fetch import Fetched
from wanserve.media.image import ImageLimits, decode_image, fit
from wanserve.media.video import Frames
from wanserve.request import MediaKind
from wanserve.spec import GenerationSpec, MediaRef, MediaScheme
from wanserve.workers.composite import source_size as composite_source_size


class Fetcher(Protocol):
    def fetch(self, url: str, *, field: str, kind: str, max_bytes: int) -> Fetched: ...


class UploadReader(Protocol):
    def open(self, url: str, *, field: str, max_bytes: int, owner: str) -> tuple[str, bytes]: ...


@dataclass(frozen=True)
class Sources:
    """A composite (VACE) pass's inputs, decoded: images as sent, videos as frames at the
    checkpoint's native frame rate (sources fitted to the denoising size, except an
    outpainting source, which keeps its own)."""

    references: tuple[Image.Image, ...] = ()
    video: Frames | None = None
    mask_image: Image.Image | None = None
    mask_video: Frames | None = None
    first_frame: Image.Image | None = None
    last_frame: Image.Image | None = None
    first_clip: Frames | None = None
    last_clip: Frames | None = None
    # The control video an annotator drew from `video` (depth), at the denoising size.
    control: Frames | None = None


# Draws a control video (depth maps) from frames; polls its cancel check between batches.
Annotate = Callable[[Frames], Frames]


@dataclass(frozen=True)
class Conditioning:
    """Input images resolved by the worker (decoded, fitted to the denoising size), which
    `translation.request_for` hands to the engine."""

    image: Image.Image | None = None
    last_image: Image.Image | None = None
    sources: Sources | None = None


@dataclass(frozen=True)
class ResolvedInputs:
    spec: GenerationSpec  # sized, for image-driven models
    conditioning: Conditioning  # what the engine sees
    audio: AudioClip | None = None  # a track to mux, as sent (not yet fitted to the video)


class MediaResolver:
    def __init__(
        self,
        *,
        fetcher: Fetcher | None = None,
        uploads: UploadReader | None = None,
        image_limits: ImageLimits | None = None,
        audio_limits: AudioLimits | None = None,
        video_limits: VideoLimits | None = None,
        annotators: Mapping[str, Annotate] | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._uploads = uploads
        self._image_limits = image_limits or ImageLimits()
        self._audio_limits = audio_limits or AudioLimits()
        self._video_limits = video_limits or VideoLimits()
        self._annotators = dict(annotators or {})

    def resolve(self, spec: GenerationSpec, *, owner: str) -> ResolvedInputs:
        """Decode `spec`'s inputs for the task of API key `owner` (uploads must be theirs)."""
        audio = None
        if spec.audio_ref is not None:
            data = self._bytes(spec.audio_ref, "audio", self._audio_limits.max_bytes, owner)
            audio = decode_audio(data, field=spec.audio_ref.field, limits=self._audio_limits)
        if spec.kind is Kind.COMPOSITE:
            spec, sources = self._sources(spec, owner)
            return ResolvedInputs(spec, Conditioning(sources=sources), audio)
        if spec.image is None:
            return ResolvedInputs(spec, Conditioning(), audio)
        first = self.image(spec.image, owner)
        if spec.width is None:
            spec = spec.with_image_size(*first.size)
        assert spec.gen_width is not None and spec.gen_height is not None
        size = (spec.gen_width, spec.gen_height)
        last = None
        if spec.last_image is not None:
            last = fit(self.image(spec.last_image, owner), *size)
        return ResolvedInputs(spec, Conditioning(image=fit(first, *size), last_image=last), audio)

    def _sources(self, spec: GenerationSpec, owner: str) -> tuple[GenerationSpec, Sources]:
        """Decode a composite spec's inputs, sizing it first from its first frame or clip
        where the video follows them."""
        refs = {kind: [r for r in spec.inputs if r.kind == kind] for kind in MediaKind}
        images = {k: [self.image(r, owner) for r in refs[k]] for k in _IMAGE_KINDS}
        cache: dict[str, bytes] = {}

        def fetched(ref: MediaRef, max_bytes: int) -> bytes:
            """A video's bytes, fetched once per task (sizing, length and frames read the
            same file)."""
            if ref.field not in cache:
                cache[ref.field] = self._bytes(ref, "video", max_bytes, owner)
            return cache[ref.field]

        if spec.width is None:
            if images[MediaKind.FIRST_FRAME]:
                spec = spec.with_image_size(*images[MediaKind.FIRST_FRAME][0].size)
            else:  # a clip to continue, or a source video to edit
                clip = (refs[MediaKind.FIRST_CLIP] or refs[MediaKind.VIDEO])[0]
                width, height, _ = probe_video(
                    fetched(clip, self._video_limits.max_bytes),
                    field=clip.field,
                    limits=self._video_limits,
                )
                spec = spec.with_image_size(width, height)
        if spec.duration == 0:  # as long as the source video (wan2.7-videoedit's default)
            source = refs[MediaKind.VIDEO][0]
            data = fetched(source, self._video_limits.max_bytes)
            spec = _source_length(spec, source, data, self._video_limits)
        assert spec.gen_width is not None and spec.gen_height is not None
        size = (spec.gen_width, spec.gen_height)
        fps = spec.native_fps
        # A source is read for the whole video: each pass follows its own window of it.
        seconds = spec.num_frames / fps

        def video(
            kind: MediaKind, *, at: tuple[int, int] = size, clip: bool = False
        ) -> Frames | None:
            if not refs[kind]:
                return None
            ref = refs[kind][0]
            limits = self._clip_limits() if clip else self._video_limits
            decoded = decode_video(
                fetched(ref, limits.max_bytes),
                field=ref.field,
                limits=limits,
                fps=fps,
                max_seconds=None if clip else seconds,
                size=at,
            )
            return decoded.frames

        plan = spec.edit
        source_at = size
        if plan is not None and plan.function == "video_outpainting":
            top, bottom, left, right = plan.scales
            source_at = composite_source_size(*size, top=top, bottom=bottom, left=left, right=right)
        sources = Sources(
            references=tuple(images[MediaKind.REFERENCE_IMAGE]),
            video=video(MediaKind.VIDEO, at=source_at),
            mask_image=_first(images[MediaKind.MASK_IMAGE]),
            mask_video=video(MediaKind.MASK_VIDEO),
            first_frame=_first(images[MediaKind.FIRST_FRAME]),
            last_frame=_first(images[MediaKind.LAST_FRAME]),
            first_clip=video(MediaKind.FIRST_CLIP, clip=True),
            last_clip=video(MediaKind.LAST_CLIP, clip=True),
        )
        control = spec.edit.control if spec.edit is not None else None
        if control in self._annotators and sources.video is not None:
            sources = dataclasses.replace(sources, control=self._annotators[control](sources.video))
        return spec, sources

    def _clip_limits(self) -> VideoLimits:
        """A clip to continue or lead into: DashScope's 2 to 10 seconds."""
        return dataclasses.replace(
            self._video_limits,
            min_seconds=max(self._video_limits.min_seconds, CLIP_SECONDS[0]),
            max_seconds=min(self._video_limits.max_seconds, CLIP_SECONDS[1]),
        )

    def image(self, ref: MediaRef, owner: str) -> Image.Image:
        data = self._bytes(ref, "image", self._image_limits.max_bytes, owner)
        return decode_image(data, field=ref.field, limits=self._image_limits)

    def _bytes(self, ref: MediaRef, kind: str, max_bytes: int, owner: str) -> bytes:
        scheme = ref.scheme
        if scheme is MediaScheme.DATA:
            return parse_data_uri(ref.url, field=ref.field, max_bytes=max_bytes)[1]
        if scheme.is_web and self._fetcher is not None:
            return self._fetcher.fetch(
                ref.url, field=ref.field, kind=kind, max_bytes=max_bytes
            ).data
        if scheme is MediaScheme.OSS and self._uploads is not None:
            return self._uploads.open(ref.url, field=ref.field, max_bytes=max_bytes, owner=owner)[1]
        raise InvalidURL(f"{ref.field}: {scheme.value} references cannot be read by this server.")


_IMAGE_KINDS = (
    MediaKind.REFERENCE_IMAGE,
    MediaKind.MASK_IMAGE,
    MediaKind.FIRST_FRAME,
    MediaKind.LAST_FRAME,
)
# A clip to continue (first_clip) or to lead into (last_clip), in seconds.
CLIP_SECONDS = (1.0, 10.0)
# A source video whose length the video takes (duration 0): DashScope's 2 to 10 seconds.
SOURCE_SECONDS = (2, 10)


def _first(images: list[Image.Image]) -> Image.Image | None:
    return images[0] if images else None


def _source_length(
    spec: GenerationSpec, ref: MediaRef, data: bytes, limits: VideoLimits
) -> GenerationSpec:
    """A video as long as its source (duration 0): whole seconds, 2 to 10. (With a duration
    longer than the source, the source's last frame holds for the rest.)"""
    _, _, seconds = probe_video(data, field=ref.field, limits=limits)
    low, high = SOURCE_SECONDS
    if seconds < low:
        raise InvalidParameter(
            f"{ref.field} is {seconds:.1f} s long; a video to edit needs at least {low} s."
        )
    return spec.with_duration(min(int(seconds), high))
