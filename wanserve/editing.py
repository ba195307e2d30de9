"""The composite (VACE) rules: which inputs each editing function takes, and its plan.

DashScope's VACE model (`wan2.1-vace-plus`) names a `function` and the inputs and parameters
that function reads; the reference-to-video and `media[]` models use the same checkpoint
implicitly (references, or a clip to continue). `edit_plan` checks a request's inputs and
parameters against the function and returns the `EditPlan` the worker builds the pass from
(`workers/composite.py`); every refusal is an `InvalidParameter` naming the field at fault.

What the open weights cannot do here is refused with the reason: a depth control signal
needs a depth model (the `depth_annotator` setting enables it), a pose signal a pose
annotator and a `tracking` mask a segmentation tracker, which this server does not run yet
(scribble control and fixed masks need none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wanserve.errors import InvalidParameter
from wanserve.request import Function, Media, MediaKind, SynthesisRequest

_FUNCTIONS = ", ".join(f.value for f in Function)
_FRAMES = (MediaKind.FIRST_FRAME, MediaKind.LAST_FRAME, MediaKind.FIRST_CLIP, MediaKind.LAST_CLIP)

# The inputs each function reads (anything else sent is refused, naming its field).
_TAKES: dict[Function, frozenset[MediaKind]] = {
    Function.IMAGE_REFERENCE: frozenset({MediaKind.REFERENCE_IMAGE}),
    Function.VIDEO_REPAINTING: frozenset({MediaKind.VIDEO, MediaKind.REFERENCE_IMAGE}),
    Function.VIDEO_EDIT: frozenset(
        {MediaKind.VIDEO, MediaKind.MASK_IMAGE, MediaKind.MASK_VIDEO, MediaKind.REFERENCE_IMAGE}
    ),
    Function.VIDEO_EXTENSION: frozenset(_FRAMES),
    Function.VIDEO_OUTPAINTING: frozenset({MediaKind.VIDEO}),
}
_ANNOTATED = ("posebodyface", "posebody", "depth")
# DashScope's defaults for video_edit.
DEFAULT_EXPAND_RATIO = 0.05


@dataclass(frozen=True)
class EditPlan:
    """How a composite (VACE) pass uses its inputs, decided at submission: the function, and
    its parameters with the model's defaults filled in."""

    function: str  # a request.Function value
    roles: tuple[str, ...] = ()  # per reference image: obj | bg
    control: str | None = None  # video_repainting: the control signal (scribble)
    strength: float = 1.0  # how strongly the source video steers (VACE's context scale)
    expand_ratio: float = 0.0  # video_edit: the mask grown by this share of the long side
    mask_frame_id: int = 1  # video_edit: the source frame (from 1) the mask image belongs to
    scales: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # top, bottom, left, right


def implicit_plan(req: SynthesisRequest) -> EditPlan:
    """The plan of a model without `function`: restyle a source video sent (wan2.7-videoedit:
    its edges steer, the prompt and references restyle), or extend the frames and clips
    sent, with the references as subjects (reference-to-video, clip continuation)."""
    refs = req.inputs(MediaKind.REFERENCE_IMAGE)
    if req.inputs(MediaKind.VIDEO):
        return EditPlan(
            function=Function.VIDEO_REPAINTING.value,
            roles=("obj",) * len(refs),
            control="scribble",
        )
    extends = any(req.inputs(kind) for kind in _FRAMES)
    function = Function.VIDEO_EXTENSION if extends else Function.IMAGE_REFERENCE
    return EditPlan(function=function.value, roles=("obj",) * len(refs))


def edit_plan(
    req: SynthesisRequest, model: str, *, annotators: frozenset[str] = frozenset()
) -> EditPlan:
    """The plan of an editing model's request (`input.function` and its parameters);
    `annotators`: the control signals this deployment can draw besides scribble."""
    edit = req.edit
    function = edit.function
    if function is None:
        raise InvalidParameter(
            f"input.function is required by {model}: one of {_FUNCTIONS}.", field="function"
        )
    _only(req.media, _TAKES[function], function)
    refs = req.inputs(MediaKind.REFERENCE_IMAGE)
    roles = _roles(edit.obj_or_bg, len(refs), function)
    if function is Function.IMAGE_REFERENCE:
        if not refs:
            raise InvalidParameter(
                "image_reference needs input.ref_images_url: 1 to 3 reference images.",
                field="ref_images_url",
            )
        return EditPlan(function=function.value, roles=roles)
    if function is Function.VIDEO_EXTENSION:
        if not any(req.inputs(kind) for kind in _FRAMES):
            raise InvalidParameter(
                "video_extension needs at least one of first_frame_url, last_frame_url, "
                "first_clip_url and last_clip_url.",
                field="first_clip_url",
            )
        _no_control(edit.control_condition, function)
        return EditPlan(function=function.value)
    _needs(req, MediaKind.VIDEO, "video_url", function)
    _one_reference(refs, function)
    if function is Function.VIDEO_OUTPAINTING:
        _no_control(edit.control_condition, function)
        scales = (edit.top_scale, edit.bottom_scale, edit.left_scale, edit.right_scale)
        return EditPlan(
            function=function.value,
            scales=(
                scales[0] or 1.0,
                scales[1] or 1.0,
                scales[2] or 1.0,
                scales[3] or 1.0,
            ),
        )
    if function is Function.VIDEO_REPAINTING:
        control = edit.control_condition
        if control is None:
            raise InvalidParameter(
                "video_repainting needs parameters.control_condition (scribble on this server).",
                field="control_condition",
            )
        if control != "scribble" and control not in annotators:
            _no_control(control, function)
        return EditPlan(
            function=function.value,
            roles=roles,
            control=control,
            strength=1.0 if edit.strength is None else edit.strength,
        )
    # video_edit
    masks = req.inputs(MediaKind.MASK_IMAGE) + req.inputs(MediaKind.MASK_VIDEO)
    if len(masks) != 1:
        raise InvalidParameter(
            "video_edit needs one mask: input.mask_image_url or input.mask_video_url.",
            field="mask_image_url",
        )
    _no_control(edit.control_condition, function)
    if masks[0].kind is MediaKind.MASK_IMAGE and (edit.mask_type or "tracking") == "tracking":
        raise InvalidParameter(
            "mask_type 'tracking' (the default) follows the masked object through the video "
            "with a segmentation tracker, which this server does not run: send "
            "parameters.mask_type 'fixed' (the mask image applies to every frame from "
            "mask_frame_id on), or input.mask_video_url with a mask for each frame.",
            field="mask_type",
        )
    return EditPlan(
        function=function.value,
        roles=roles,
        expand_ratio=DEFAULT_EXPAND_RATIO if edit.expand_ratio is None else edit.expand_ratio,
        mask_frame_id=edit.mask_frame_id or 1,
    )


def _only(media: Iterable[Media], takes: frozenset[MediaKind], function: Function) -> None:
    for item in media:
        if item.kind not in takes:
            raise InvalidParameter(
                f"{item.field} is not an input of function {function.value}.", field=item.field
            )


def _needs(req: SynthesisRequest, kind: MediaKind, name: str, function: Function) -> None:
    if not req.inputs(kind):
        raise InvalidParameter(f"{function.value} needs input.{name}.", field=name)


def _one_reference(refs: tuple[Media, ...], function: Function) -> None:
    if len(refs) > 1:
        raise InvalidParameter(
            f"{function.value} takes at most one reference image, not {len(refs)}.",
            field=refs[1].field,
        )


def _roles(values: tuple[str, ...] | None, refs: int, function: Function) -> tuple[str, ...]:
    if values is None:
        return ("obj",) * refs
    if function is not Function.IMAGE_REFERENCE or len(values) != refs:
        # DashScope's own message.
        raise InvalidParameter(
            "ref_images_url and obj_or_bg must be the same length.", field="obj_or_bg"
        )
    if values.count("bg") > 1:
        raise InvalidParameter("obj_or_bg names at most one background ('bg').", field="obj_or_bg")
    return values


def _no_control(control: str | None, function: Function) -> None:
    if control is None:
        return
    if control == "depth" and function is Function.VIDEO_REPAINTING:
        raise InvalidParameter(
            "control_condition 'depth' needs a depth annotator model, which this server is not "
            "configured with: an operator sets depth_annotator (docs/configuration.md); "
            "'scribble' (edges drawn from the source video) needs none.",
            field="control_condition",
        )
    if control in _ANNOTATED:
        raise InvalidParameter(
            f"control_condition {control!r} needs a "
            f"{'depth' if control == 'depth' else 'pose'} annotator, which this server does "
            f"not run for {function.value} yet; video_repainting takes 'scribble'"
            " (and 'depth' where depth_annotator is set).",
            field="control_condition",
        )
    raise InvalidParameter(
        f"control_condition is not a parameter of {function.value}.", field="control_condition"
    )
