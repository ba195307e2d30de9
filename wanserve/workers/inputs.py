"""Resolve a spec's input references into decoded media, and size image-driven specs.

Every reference a client sent (`img_url`, `first_frame_url`, `last_frame_url`, `audio_url`)
is turned into bytes here and nowhere else: base64 data URIs are decoded in place, http(s)
URLs go through the one guarded fetcher, and `oss://` references come from the upload store.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from wanserve.engine.runner import Conditioning
from wanserve.errors import InvalidParameter, InvalidURL
from wanserve.media.image import ImageLimits, decode_image, fit, parse_data_uri
from wanserve.spec import GenerationSpec, MediaRef

# (url, field, max_bytes) -> (content type, bytes)
FetchFn = Callable[[str, str, int], tuple[str, bytes]]


class MediaResolver:
    def __init__(
        self,
        *,
        fetch: FetchFn | None = None,
        open_upload: FetchFn | None = None,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self._fetch = fetch
        self._open_upload = open_upload
        self._image_limits = image_limits or ImageLimits()

    def resolve(self, spec: GenerationSpec) -> tuple[GenerationSpec, Conditioning]:
        if spec.audio_ref is not None:
            raise InvalidParameter("audio_url inputs are not supported by this server yet.")
        if spec.image is None:
            return spec, Conditioning()
        first = self.image(spec.image)
        if spec.width is None:
            spec = spec.with_image_size(*first.size)
        assert spec.gen_width is not None and spec.gen_height is not None
        size = (spec.gen_width, spec.gen_height)
        last = None
        if spec.last_image is not None:
            last = fit(self.image(spec.last_image), *size)
        return spec, Conditioning(image=fit(first, *size), last_image=last)

    def image(self, ref: MediaRef) -> Image.Image:
        _, data = self._bytes(ref, self._image_limits.max_bytes)
        return decode_image(data, field=ref.field, limits=self._image_limits)

    def _bytes(self, ref: MediaRef, max_bytes: int) -> tuple[str, bytes]:
        scheme = ref.url.split(":", 1)[0].lower()
        if scheme == "data":
            return parse_data_uri(ref.url, field=ref.field, max_bytes=max_bytes)
        if scheme in ("http", "https") and self._fetch is not None:
            return self._fetch(ref.url, ref.field, max_bytes)
        if scheme == "oss" and self._open_upload is not None:
            return self._open_upload(ref.url, ref.field, max_bytes)
        raise InvalidURL(f"{ref.field}: {scheme} references cannot be read by this server.")
