"""The depth annotator on its tiny random Depth Anything build (dummy mode, CPU), through the
same `from_pretrained` path as real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wanserve.engine import annotators
from wanserve.engine.annotators import DepthAnnotator, ensure_dummy_depth_model
from wanserve.engine.errors import BadInput, Canceled, WeightsUnavailable
from wanserve.engine.request import EngineConfig

BUILD = f"{annotators.DUMMY_DEPTH_NAME}-v{annotators.DUMMY_DEPTH_VERSION}"


def config(root: Path, **changes: object) -> EngineConfig:
    base: dict[str, object] = {"weights": "dummy", "device": "cpu", "dummy_root": root}
    return EngineConfig(**(base | changes))  # type: ignore[arg-type]


def clip(n: int = 5, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames with structure (a diagonal ramp, a square that moves) and some noise."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        frame = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.int64)
        frame[8:24, 4 + 6 * i : 20 + 6 * i] = (250, 30, 30)
        frame += rng.integers(-12, 13, size=frame.shape)
        frames[i] = frame.clip(0, 255)
    return frames


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dummy")


@pytest.fixture(scope="module")
def annotator(root: Path) -> DepthAnnotator:
    return DepthAnnotator(config(root))


@pytest.fixture(scope="module")
def maps(annotator: DepthAnnotator) -> np.ndarray:
    return annotator(clip())


def test_depth_maps_are_grey_frames_of_the_input_size(maps: np.ndarray) -> None:
    frames = clip()
    assert maps.shape == frames.shape and maps.dtype == np.uint8
    assert (maps[..., 0] == maps[..., 1]).all() and (maps[..., 0] == maps[..., 2]).all()
    # Scaled over the whole clip: its nearest point is white and its farthest black...
    assert maps.min() == 0 and maps.max() == 255
    assert len(np.unique(maps)) > 32
    # ...not each frame on its own: some frame does not reach both ends.
    per_frame = [(int(m.min()), int(m.max())) for m in maps]
    assert any(ends != (0, 255) for ends in per_frame)


def test_the_build_is_written_once_and_then_loaded(
    root: Path, maps: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = root / BUILD / "model.safetensors"
    assert (root / BUILD / "preprocessor_config.json").exists()
    written = weights.stat().st_mtime_ns

    def no_build() -> None:
        raise AssertionError("the dummy depth model was built again")

    monkeypatch.setattr(annotators, "build_dummy_depth_model", no_build)
    again = DepthAnnotator(config(root))(clip())
    assert weights.stat().st_mtime_ns == written
    assert sorted(p.name for p in root.iterdir()) == [BUILD]  # no staging left behind
    np.testing.assert_array_equal(again, maps)  # same weights, same maps


def test_two_builds_are_identical(tmp_path: Path, maps: np.ndarray) -> None:
    np.testing.assert_array_equal(DepthAnnotator(config(tmp_path))(clip()), maps)


def test_batches_do_not_change_the_maps(root: Path, maps: np.ndarray) -> None:
    one_by_one = DepthAnnotator(config(root), batch_frames=2)(clip())
    assert np.abs(one_by_one.astype(int) - maps.astype(int)).max() <= 1


def test_a_local_directory_loads_in_auto_mode(root: Path, maps: np.ndarray) -> None:
    real = config(root / "elsewhere", weights="auto", allow_download=False)
    local = DepthAnnotator(real, source=str(ensure_dummy_depth_model(root)))
    np.testing.assert_array_equal(local(clip()), maps)
    assert not (root / "elsewhere").exists()  # no dummy built in auto mode


def test_cancel_between_batches(root: Path) -> None:
    annotator = DepthAnnotator(config(root), batch_frames=2)
    with pytest.raises(Canceled):
        annotator(clip(), should_cancel=lambda: True)
    polls: list[None] = []

    def after_the_first_batch() -> bool:
        polls.append(None)
        return len(polls) > 1

    with pytest.raises(Canceled):
        annotator(clip(), should_cancel=after_the_first_batch)
    assert len(polls) == 2
    assert annotator(clip(1)).shape == (1, 48, 64, 3)  # still usable


@pytest.mark.parametrize("source", ["missing-dir", annotators.DEFAULT_DEPTH_MODEL])
def test_missing_weights_say_how_to_configure_them(tmp_path: Path, source: str) -> None:
    where = str(tmp_path / source) if source == "missing-dir" else source
    settings = config(
        tmp_path / "dummy", weights="auto", allow_download=False, hf_cache_dir=tmp_path / "hf"
    )
    annotator = DepthAnnotator(settings, source=where)  # lazy: nothing is read yet
    with pytest.raises(WeightsUnavailable, match="depth_annotator") as caught:
        annotator(clip(1))
    assert where in str(caught.value) and "allow downloads" in str(caught.value)


def test_frames_must_be_rgb_uint8(annotator: DepthAnnotator) -> None:
    with pytest.raises(BadInput):
        annotator(clip()[..., 0])
    with pytest.raises(BadInput):
        annotator(clip().astype(np.float32))
    assert annotator(clip(0)).shape == (0, 48, 64, 3)


def test_a_flat_clip_is_black() -> None:
    flat = np.full((2, 4, 4), 0.5, dtype=np.float32)
    assert (annotators._to_gray(flat) == 0).all()
    ramp = np.linspace(1.0, 3.0, 32, dtype=np.float32).reshape(2, 4, 4)
    gray = annotators._to_gray(ramp)
    assert gray[0, 0, 0] == 0 and gray[1, 3, 3] == 255  # nearer (larger) is whiter


def test_random_weights_build_the_real_architecture_in_memory(tmp_path: Path) -> None:
    model, processor = DepthAnnotator(config(tmp_path, weights="random"))._loaded()
    size = processor.size
    assert (size.height, size.width, processor.ensure_multiple_of) == (518, 518, 14)
    assert model.config.backbone_config.hidden_size == 384
    assert 24_000_000 < sum(p.numel() for p in model.parameters()) < 26_000_000
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
