"""Optical flow: warping against a NumPy reference, TV-L1 on synthetic motions, occlusion masks.

Every estimator call uses 96x96 frames and the default settings, so the file pays one compile
for ``estimate_flow`` and one for ``forward_backward``.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxdream import flow
from jaxdream.errors import SettingsError

SIZE = 96
MARGIN = 8  # interior: pixels at least this far from the border
INTERIOR = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))


def bilinear_reference(image: np.ndarray, flow_: np.ndarray) -> np.ndarray:
    """out[y, x] = image[y + dy, x + dx], bilinear, coordinates clamped to the border."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(x + flow_[..., 0], 0, w - 1)
    sy = np.clip(y + flow_[..., 1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = sx - x0, sy - y0
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    img = image.astype(np.float64)
    return ((img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy)
            + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy)


def texture(seed: int, waves: int = 60):
    """A smooth random texture f(x, y), a sum of sinusoids: exact at any real coordinate."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, waves)
    freq = rng.uniform(0.02, 0.09, waves)  # cycles per pixel: periods of 11 to 50 px
    phase = rng.uniform(0, 2 * np.pi, waves)
    amp = rng.uniform(0.5, 1.0, waves) / np.sqrt(freq / 0.02)
    kx, ky = freq * np.cos(angle), freq * np.sin(angle)

    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (kx * x[..., None] + ky * y[..., None]) + phase
        return 127.5 + 22.0 * np.sum(amp * np.cos(arg), axis=-1)

    return f


def affine_pair(matrix: np.ndarray, shift=(0.0, 0.0), seed: int = 0):
    """Frames a, b and the true flow for b(T x) = a(x), T an affine map about the centre."""
    f = texture(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    c = (SIZE - 1) / 2
    tx = matrix[0, 0] * (x - c) + matrix[0, 1] * (y - c) + c + shift[0]
    ty = matrix[1, 0] * (x - c) + matrix[1, 1] * (y - c) + c + shift[1]
    inv = np.linalg.inv(matrix)
    sx = inv[0, 0] * (x - c - shift[0]) + inv[0, 1] * (y - c - shift[1]) + c
    sy = inv[1, 0] * (x - c - shift[0]) + inv[1, 1] * (y - c - shift[1]) + c
    truth = np.stack([tx - x, ty - y], axis=-1)
    return f(x, y).astype(np.float32), f(sx, sy).astype(np.float32), truth.astype(np.float32)


def rotation(degrees: float, zoom: float = 1.0) -> np.ndarray:
    r = np.deg2rad(degrees)
    return zoom * np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])


# --------------------------------------------------------------------------------------------
# warp
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [None, 3])
def test_warp_matches_numpy_reference(channels):
    rng = np.random.default_rng(1)
    shape = (40, 52) if channels is None else (40, 52, channels)
    image = rng.uniform(0, 255, shape).astype(np.float32)
    # smooth flow of up to ~8 px, so that samples leave the frame near the borders
    y, x = np.mgrid[0:40, 0:52] / 10.0
    flow_ = np.stack([6 * np.sin(x + 2 * y) + 1.3, 5 * np.cos(x - y) - 0.6], -1).astype(np.float32)
    got = np.asarray(flow.warp(image, flow_))
    assert got.shape == image.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, bilinear_reference(image, flow_), rtol=0, atol=1e-3)


def test_warp_clamps_to_the_border_and_interpolates():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    shift = np.zeros((3, 4, 2), np.float32)
    shift[..., 0] = 1.5
    np.testing.assert_allclose(np.asarray(flow.warp(image, shift))[0], [1.5, 2.5, 3.0, 3.0])
    shift[..., 0], shift[..., 1] = -10.0, 10.0
    np.testing.assert_allclose(np.asarray(flow.warp(image, shift)), np.full((3, 4), 8.0))


def test_warp_zero_flow_is_identity():
    image = np.random.default_rng(2).uniform(0, 255, (17, 23, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(flow.warp(image, np.zeros((17, 23, 2)))), image)


def test_median_filter_matches_numpy():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(11, 13, 2)).astype(np.float32)
    padded = np.pad(u, ((2, 2), (2, 2), (0, 0)), mode="edge")
    ref = np.stack([[np.median(padded[i:i + 5, j:j + 5].reshape(25, 2), axis=0)
                     for j in range(13)] for i in range(11)])
    filtered = flow._median_filter(np.moveaxis(u, -1, 0), 2)  # channel-first inside TV-L1
    np.testing.assert_array_equal(np.moveaxis(np.asarray(filtered), 0, -1), ref)


# --------------------------------------------------------------------------------------------
# estimate_flow
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(3.0, -2.0), (1.5, -0.75)])
def test_estimate_flow_recovers_shifts(shift):
    a, b, truth = affine_pair(np.eye(2), shift)
    estimated = flow.estimate_flow(a, b)
    assert estimated.shape == (SIZE, SIZE, 2) and estimated.dtype == np.float32
    assert flow.endpoint_error(estimated[INTERIOR], truth[INTERIOR]) < 0.3
    # and the flow aligns the frames: warp(b, flow) ≈ a
    residual = np.abs(np.asarray(flow.warp(b, estimated)) - a)[INTERIOR]
    assert residual.mean() < 0.05 * np.abs(b - a)[INTERIOR].mean()


@pytest.mark.parametrize("matrix", [rotation(2.0), rotation(0.0, zoom=1.03)],
                         ids=["rotate-2deg", "zoom-1.03"])
def test_estimate_flow_recovers_rotation_and_zoom(matrix):
    a, b, truth = affine_pair(matrix, seed=4)
    estimated = flow.estimate_flow(a, b)
    assert flow.endpoint_error(estimated[INTERIOR], truth[INTERIOR]) < 0.5


def test_estimate_flow_takes_rgb_and_does_not_retrace():
    a, b, truth = affine_pair(np.eye(2), (-1.25, 2.5), seed=5)
    # colour frames whose luminance is the gray frame
    tint = np.array([0.9, 1.05, 1.0], np.float32) / np.dot([0.9, 1.05, 1.0], flow._LUMA)
    a_rgb, b_rgb = a[..., None] * tint, b[..., None] * tint
    flow.estimate_flow(a_rgb, b_rgb)  # compiles for (96, 96, 3) if no other test did
    traces = flow._trace_counts["estimate"]
    estimated = flow.estimate_flow(a_rgb, b_rgb, lam=0.2)  # traced setting: no retrace
    assert flow._trace_counts["estimate"] == traces
    assert flow.endpoint_error(estimated[INTERIOR], truth[INTERIOR]) < 0.3


# --------------------------------------------------------------------------------------------
# occlusions
# --------------------------------------------------------------------------------------------

SQUARE, STEP = (30, 30, 24), 6  # square (x0, y0, side) in frame a; it moves STEP px right in b


def square_scene():
    """Static textured background and a textured square moving right: frames and true flows."""
    x0, y0, side = SQUARE
    bg, fg = texture(6), texture(7)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    in_a = (x >= x0) & (x < x0 + side) & (y >= y0) & (y < y0 + side)
    in_b = (x >= x0 + STEP) & (x < x0 + side + STEP) & (y >= y0) & (y < y0 + side)
    a = np.where(in_a, fg(x, y), bg(x, y)).astype(np.float32)
    b = np.where(in_b, fg(x - STEP, y), bg(x, y)).astype(np.float32)
    fw = np.zeros((SIZE, SIZE, 2), np.float32)
    fw[in_a, 0] = STEP
    bw = np.zeros((SIZE, SIZE, 2), np.float32)
    bw[in_b, 0] = -STEP
    covered = in_b & ~in_a  # background of a hidden by the square in b
    uncovered = in_a & ~in_b  # background of b that the square hid in a
    far = np.ones((SIZE, SIZE), bool)  # more than 3 px from either square's outline
    for sx in (x0, x0 + STEP):
        far &= ~((x >= sx - 3) & (x < sx + side + 3) & (y >= y0 - 3) & (y < y0 + side + 3)
                 & ~((x >= sx + 3) & (x < sx + side - 3) & (y >= y0 + 3) & (y < y0 + side - 3)))
    return a, b, fw, bw, covered, uncovered, far


def test_occlusion_mask_with_true_flows():
    _, _, fw, bw, covered, uncovered, far = square_scene()
    mask_a = np.asarray(flow.occlusion_mask(fw, bw, motion_boundaries=False))
    assert mask_a.shape == (SIZE, SIZE) and set(np.unique(mask_a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(mask_a == 0, covered)
    mask_b = np.asarray(flow.occlusion_mask(bw, fw, motion_boundaries=False))
    np.testing.assert_array_equal(mask_b == 0, uncovered)
    # motion boundaries add the square's outline, nothing far from it
    with_edges = np.asarray(flow.occlusion_mask(fw, bw))
    assert (with_edges <= mask_a).all() and with_edges[far].all()
    assert with_edges.sum() < mask_a.sum()


def test_occlusion_mask_flags_pixels_that_leave_the_frame():
    pan = np.zeros((20, 30, 2), np.float32)
    pan[..., 0] = 4.0
    mask = np.asarray(flow.occlusion_mask(pan, -pan))
    assert (mask[:, -4:] == 0).all() and (mask[:, :-4] == 1).all()


def test_occlusion_mask_with_estimated_flows():
    a, b, fw_true, _, covered, uncovered, far = square_scene()
    fw, bw = flow.forward_backward(a, b)
    np.testing.assert_allclose(np.asarray(fw), np.asarray(flow.estimate_flow(a, b)), atol=1e-3)
    mask_a = np.asarray(flow.occlusion_mask(fw, bw))
    mask_b = np.asarray(flow.occlusion_mask(bw, fw))
    assert mask_a[covered].mean() < 0.2 and mask_b[uncovered].mean() < 0.2
    assert mask_a[far].mean() > 0.95 and mask_b[far].mean() > 0.95
    reliable = mask_a > 0
    assert flow.endpoint_error(fw, fw_true, reliable) < 0.3
    # temporal error: warping aligns the reliable pixels, not warping does not
    warped_error = flow.temporal_error(b, a, fw, mask_a)
    assert warped_error < 0.05 * flow.temporal_error(b, a, np.zeros_like(fw), mask_a)


# --------------------------------------------------------------------------------------------
# measures and settings
# --------------------------------------------------------------------------------------------


def test_endpoint_and_temporal_error_values():
    truth = np.zeros((2, 2, 2), np.float32)
    est = truth.copy()
    est[0, 0] = (3.0, 4.0)
    assert flow.endpoint_error(est, truth) == pytest.approx(5.0 / 4)
    assert flow.endpoint_error(est, truth, mask=np.array([[0, 1], [1, 1]])) == 0.0
    prev = np.zeros((2, 2, 3), np.float32)
    nxt = prev.copy()
    nxt[0, 0] = 2.0
    assert flow.temporal_error(prev, nxt, truth) == pytest.approx(4.0 / 4)
    assert flow.temporal_error(prev, nxt, truth, np.array([[1, 0], [0, 1]])) == pytest.approx(2.0)


def test_pyramid_levels():
    assert flow.pyramid_levels(8, 8) == 1
    assert flow.pyramid_levels(96, 96) == 4  # 96, 48, 24, 12
    assert flow.pyramid_levels(240, 320) == 5  # coarsest 15x20
    assert flow.pyramid_levels(240, 320, 0.7) > 5


@pytest.mark.parametrize("call, message", [
    (lambda: flow.estimate_flow(np.zeros((32, 32)), np.zeros((32, 30))), "differ in shape"),
    (lambda: flow.estimate_flow(np.zeros((32, 32, 4)), np.zeros((32, 32, 4))), "channels"),
    (lambda: flow.estimate_flow(np.zeros((32, 32)), np.zeros((32, 32)), iterations=0),
     "iterations"),
    (lambda: flow.estimate_flow(np.zeros((32, 32)), np.zeros((32, 32)), tau=0.5), "tau"),
    (lambda: flow.estimate_flow(np.zeros((32, 32)), np.zeros((32, 32)), levels=5), "levels=5"),
    (lambda: flow.forward_backward(np.zeros((32, 32)), np.zeros((32, 32)), warp=3), "warp"),
    (lambda: flow.warp(np.zeros((32, 32)), np.zeros((32, 32, 3))), "(H, W, 2)"),
    (lambda: flow.warp(np.zeros((32, 32)), np.zeros((16, 32, 2))), "does not match"),
    (lambda: flow.occlusion_mask(np.zeros((8, 8, 2)), np.zeros((8, 9, 2))), "flow_bw"),
    (lambda: flow.endpoint_error(np.zeros((8, 8, 2)), np.zeros((8, 8, 2)), np.zeros((8, 8))),
     "no pixels"),
    (lambda: flow.temporal_error(np.zeros((8, 8)), np.zeros((8, 8, 3)), np.zeros((8, 8, 2))),
     "differ in shape"),
])
def test_bad_arguments_raise_one_line_settings_errors(call, message):
    with pytest.raises(SettingsError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_warp_and_mask_work_inside_jit():
    import jax

    image = np.random.default_rng(8).uniform(0, 255, (12, 10, 3)).astype(np.float32)
    shift = np.full((12, 10, 2), 0.5, np.float32)
    jitted = jax.jit(lambda img, f: (flow.warp(img, f), flow.occlusion_mask(f, -f)))
    warped, mask = jitted(image, shift)
    np.testing.assert_allclose(np.asarray(warped), bilinear_reference(image, shift), atol=1e-3)
    assert mask.shape == (12, 10)
