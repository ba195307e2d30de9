"""The engine boundary, seen from the worker: a task's spec becomes the engine's
`GenerationRequest` here, and the engine's exceptions become DashScope errors here. Nowhere
else: the engine knows nothing of specs, model names or error codes.

    spec + Conditioning --request_for--> GenerationRequest --Runner.run--> Clip
    EngineError         --task_error---> WanserveError (code, client-facing message)

    engine error                 DashScope code        why
    Canceled                     (not an error)        `execute` ends the task CANCELED,
                                                       hands it back, or fails it on timeout
    OutOfMemory                  InternalError.Algo    the request is too big for this device
    WeightsUnavailable           InternalError.Algo    ModelUnavailable: operator must configure
    BadInput, any EngineError    InternalError         build_spec validated the request, so an
                                                       inconsistent one is the server's fault
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from wanserve.editing import EditPlan
from wanserve.engine.errors import BadInput, EngineError, OutOfMemory, WeightsUnavailable
from wanserve.engine.families import Kind
from wanserve.engine.options import CachePreset
from wanserve.engine.request import GenerationRequest
from wanserve.errors import InternalError, InvalidParameter, ModelUnavailable, WanserveError
from wanserve.media.image import fit
from wanserve.media.video import Frames
from wanserve.request import Function
from wanserve.spec import GenerationSpec
from wanserve.workers import composite
from wanserve.workers.composite import CompositeInputs
from wanserve.workers.inputs import Conditioning, Sources


def request_for(spec: GenerationSpec, *, conditioning: Conditioning) -> GenerationRequest:
    """The engine's request for one pass of `spec` (a sized spec: image-driven specs are
    sized by the input resolver first)."""
    if spec.gen_width is None or spec.gen_height is None:
        raise ValueError("spec has no size yet (image-to-video specs are sized by the worker)")
    composite = None
    if spec.kind is Kind.COMPOSITE:
        if spec.edit is None or conditioning.sources is None:
            raise ValueError("a composite pass needs its plan and its decoded inputs")
        try:
            composite = composite_inputs(
                spec.edit,
                _window(conditioning.sources, spec.source_offset),
                num_frames=spec.num_frames,
                width=spec.gen_width,
                height=spec.gen_height,
                first=conditioning.image,
                mask_frame_id=max(1, spec.edit.mask_frame_id - spec.source_offset),
            )
        except ValueError as exc:  # what the inputs sent cannot make (a clip too long, ...)
            raise InvalidParameter(f"The inputs cannot make this video: {exc}.") from None
    return GenerationRequest(
        checkpoint=spec.checkpoint,
        family=spec.family,
        kind=spec.kind,
        width=spec.gen_width,
        height=spec.gen_height,
        num_frames=spec.num_frames,
        steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        guidance_scale_2=spec.guidance_scale_2,
        flow_shift=spec.flow_shift,
        seed=spec.seed,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        # A composite pass takes its first frame (if any) as part of its video, above.
        first_frame=None if composite is not None else conditioning.image,
        last_frame=conditioning.last_image,
        cache=CachePreset(spec.cache),
        adapters=spec.adapters,
        video=composite.video if composite else None,
        mask=composite.mask if composite else None,
        reference_images=composite.references if composite else (),
        conditioning_scale=composite.conditioning_scale if composite else 1.0,
    )


def _window(sources: Sources, offset: int) -> Sources:
    """The sources a pass from source frame `offset` on reads (a source and mask video from
    there; everything else as it is)."""
    if offset == 0:
        return sources
    return dataclasses.replace(
        sources,
        video=_from(sources.video, offset),
        mask_video=_from(sources.mask_video, offset),
        control=_from(sources.control, offset),
    )


def _from(frames: Frames | None, offset: int) -> Frames | None:
    """`frames` from `offset` on; past their end, the last one (which then holds)."""
    if frames is None or not len(frames):
        return frames
    return frames[min(offset, len(frames) - 1) :]


def composite_inputs(
    plan: EditPlan,
    sources: Sources,
    *,
    num_frames: int,
    width: int,
    height: int,
    first: Image.Image | None = None,
    mask_frame_id: int | None = None,
) -> CompositeInputs:
    """A composite pass's video, mask and references, as its plan's function builds them
    from the decoded inputs (`workers/composite.py`); a pass that continues another keeps
    `first` (the previous pass's last frame) as its first frame."""
    inputs = _by_function(
        plan,
        sources,
        num_frames=num_frames,
        width=width,
        height=height,
        mask_frame_id=mask_frame_id or plan.mask_frame_id,
    )
    if first is not None and inputs.video is not None and inputs.mask is not None:
        video, mask = inputs.video.copy(), inputs.mask.copy()
        video[0] = np.asarray(fit(first.convert("RGB"), width, height))
        mask[0] = composite.KEEP
        inputs = dataclasses.replace(inputs, video=video, mask=mask)
    if not sources.references:
        return inputs
    roles = plan.roles if len(plan.roles) == len(sources.references) else None
    references = composite.references(sources.references, roles, width=width, height=height)
    return dataclasses.replace(inputs, references=references)


def _by_function(
    plan: EditPlan,
    sources: Sources,
    *,
    num_frames: int,
    width: int,
    height: int,
    mask_frame_id: int,
) -> CompositeInputs:
    size = {"num_frames": num_frames, "width": width, "height": height}
    function = Function(plan.function)
    if function is Function.VIDEO_EXTENSION:
        # The known frames share at most half the pass: the single frames, then the clips.
        singles = (sources.first_frame is not None) + (sources.last_frame is not None)
        clips = (sources.first_clip is not None) + (sources.last_clip is not None)
        share = max(1, ((num_frames - 1) // 2 - singles) // max(1, clips))
        inputs = composite.extension(
            **size,
            first_clip=_context(sources.first_clip, share, keep="end"),
            last_clip=_context(sources.last_clip, share, keep="start"),
            first_frame=sources.first_frame,
            last_frame=sources.last_frame,
        )
    elif function is Function.VIDEO_OUTPAINTING:
        assert sources.video is not None
        top, bottom, left, right = plan.scales
        inputs = composite.outpainting(
            sources.video, **size, top=top, bottom=bottom, left=left, right=right
        )
    elif function is Function.VIDEO_EDIT:
        assert sources.video is not None
        inputs = composite.masked_edit(
            sources.video,
            sources.mask_image,
            **size,
            mask_video=sources.mask_video,
            expand_ratio=plan.expand_ratio,
            mask_frame_id=mask_frame_id,
        )
    elif function is Function.VIDEO_REPAINTING:
        assert sources.video is not None
        if plan.control == "depth" and sources.control is None:
            raise ModelUnavailable(
                "This worker has no depth annotator (depth_annotator is set on the API but "
                "not on this worker): set it alike on every process."
            )
        inputs = composite.repainting(
            sources.video, **size, strength=plan.strength, control=sources.control
        )
    else:
        inputs = composite.CompositeInputs(video=None, mask=None, references=())
    return inputs


def _context(clip: Frames | None, most: int, *, keep: str) -> Frames | None:
    """The part of a clip a pass takes as known frames, at most `most`: the clip's end for a
    clip to continue, its start for one to lead into."""
    if clip is None:
        return None
    return clip[-most:] if keep == "end" else clip[:most]


def task_error(exc: EngineError, *, spec: GenerationSpec) -> WanserveError:
    """The DashScope error a task ends with when the engine raised `exc` running `spec`.
    (`Canceled` is not an error; `execute` handles it before it gets here.)"""
    if isinstance(exc, OutOfMemory):
        advice = (
            "Lower model_memory_gib so fewer models stay resident, or enable cpu_offload or "
            "text_encoder_device=cpu (docs/configuration.md)."
            if exc.while_loading
            else f"with {spec.model}. Try a shorter duration or a lower resolution; operators "
            "can enable cpu_offload, text_encoder_device=cpu or vae_tiling "
            "(docs/configuration.md)."
        )
        return InternalError(f"{exc} {advice}", code="InternalError.Algo")
    if isinstance(exc, WeightsUnavailable):
        return ModelUnavailable(str(exc))
    if isinstance(exc, BadInput):
        return InternalError(f"The server could not run {spec.model} as asked: {exc}.")
    return InternalError(f"The engine failed running {spec.model}: {exc}")
