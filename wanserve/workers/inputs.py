"""Resolve a spec's input references into decoded media, and size image-driven specs.

Every reference a client sent (`img_url`, `first_frame_url`, `last_frame_url`, `audio_url`)
is turned into bytes here and nowhere else: base64 data URIs are decoded in place, http(s)
URLs go through the one guarded fetcher, and `oss://` references come from the upload store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from wanserve.errors import InvalidURL
from wanserve.media.audio import AudioClip, AudioLimits, decode_audio
from wanserve.media.datauri import parse_data_uri
from wanserve.media.fetch import Fetched
from wanserve.media.image import ImageLimits, decode_image, fit
from wanserve.spec import GenerationSpec, MediaRef, MediaScheme


class Fetcher(Protocol):
    def fetch(self, url: str, *, field: str, kind: str, max_bytes: int) -> Fetched: ...


class UploadReader(Protocol):
    def open(self, url: str, *, field: str, max_bytes: int, owner: str) -> tuple[str, bytes]: ...


@dataclass(frozen=True)
class Conditioning:
    """Input images resolved by the worker (decoded, fitted to the denoising size), which
    `translation.request_for` hands to the engine."""

    image: Image.Image | None = None
    last_image: Image.Image | None = None


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
    ) -> None:
        self._fetcher = fetcher
        self._uploads = uploads
        self._image_limits = image_limits or ImageLimits()
        self._audio_limits = audio_limits or AudioLimits()

    def resolve(self, spec: GenerationSpec, *, owner: str) -> ResolvedInputs:
        """Decode `spec`'s inputs for the task of API key `owner` (uploads must be theirs)."""
        audio = None
        if spec.audio_ref is not None:
            data = self._bytes(spec.audio_ref, "audio", self._audio_limits.max_bytes, owner)
            audio = decode_audio(data, field=spec.audio_ref.field, limits=self._audio_limits)
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
