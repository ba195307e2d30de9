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

from wanserve.engine.errors import BadInput, EngineError, OutOfMemory, WeightsUnavailable
from wanserve.engine.options import CachePreset
from wanserve.engine.request import GenerationRequest
from wanserve.errors import InternalError, ModelUnavailable, WanserveError
from wanserve.spec import GenerationSpec
from wanserve.workers.inputs import Conditioning


def request_for(spec: GenerationSpec, *, conditioning: Conditioning) -> GenerationRequest:
    """The engine's request for one pass of `spec` (a sized spec: image-driven specs are
    sized by the input resolver first)."""
    if spec.gen_width is None or spec.gen_height is None:
        raise ValueError("spec has no size yet (image-to-video specs are sized by the worker)")
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
        first_frame=conditioning.image,
        last_frame=conditioning.last_image,
        cache=CachePreset(spec.cache),
        adapters=spec.adapters,
    )


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
