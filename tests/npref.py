"""Plain NumPy (float64) reference implementations of the Caffe layers and the two networks.

Written from Caffe's C++ (``pooling_layer.cpp``, ``lrn_layer.cpp``, ``conv_layer.cpp``) and the
published ``bvlc_googlenet_deploy.prototxt``, independently of jaxdream's JAX code: nothing here
imports jaxdream. Everything is NHWC; kernels are HWIO, as in jaxdream's flat parameter dicts
(``{"layer/kernel": (kh, kw, in, out), "layer/bias": (out,)}``). Slow loops are fine: tests
only run these on small inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FLT_MAX = float(np.finfo(np.float32).max)

# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None,
           stride: int = 1, pad: int = 0) -> np.ndarray:
    """Caffe Convolution (cross-correlation, zero padding): (N,H,W,C) * (kh,kw,C,O) -> (N,h,w,O).

    Output length ``(H + 2 pad - k) // stride + 1``. im2col in float64: every output position's
    (kh, kw, C) input window becomes a row, multiplied by the kernel as a (kh*kw*C, O) matrix.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw, cin, cout = kernel.shape
    assert x.shape[-1] == cin, (x.shape, kernel.shape)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # (N, Ho, Wo, C, kh, kw): the window at every stride-th position
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    n, ho, wo = windows.shape[:3]
    cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * cin)
    out = (cols @ kernel.reshape(kh * kw * cin, cout)).reshape(n, ho, wo, cout)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """PoolingLayer::Reshape: ceil rounding, then drop a last window starting in the padding."""
    pooled = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def caffe_pool(x: np.ndarray, mode: str, kernel: int, stride: int, pad: int = 0) -> np.ndarray:
    """Caffe PoolingLayer::Forward_cpu, MAX or AVE, looped over output positions like the C++.

    MAX: window ``[hstart, hend)`` with ``hend = min(hstart + kernel, H)``, ``hstart`` clipped
    at 0 (padding never contributes). AVE: ``hend = min(hstart + kernel, H + pad)`` and
    ``pool_size = (hend - hstart) * (wend - wstart)`` are taken *before* clipping to the
    image, so the divisor counts padding but not any overhang past it.
    """
    assert mode in ("max", "ave")
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    ph_n = caffe_pooled_size(h, kernel, stride, pad)
    pw_n = caffe_pooled_size(w, kernel, stride, pad)
    out = np.empty((n, ph_n, pw_n, c))
    for ph in range(ph_n):
        for pw in range(pw_n):
            hstart = ph * stride - pad
            wstart = pw * stride - pad
            if mode == "max":
                hend = min(hstart + kernel, h)
                wend = min(wstart + kernel, w)
                hstart = max(hstart, 0)
                wstart = max(wstart, 0)
                window = x[:, hstart:hend, wstart:wend, :]
                out[:, ph, pw, :] = window.max(axis=(1, 2)) if window.size else -FLT_MAX
            else:
                hend = min(hstart + kernel, h + pad)
                wend = min(wstart + kernel, w + pad)
                pool_size = (hend - hstart) * (wend - wstart)
                hstart = max(hstart, 0)
                wstart = max(wstart, 0)
                hend = min(hend, h)
                wend = min(wend, w)
                total = x[:, hstart:hend, wstart:wend, :].sum(axis=(1, 2))
                out[:, ph, pw, :] = total / pool_size
    return out


def caffe_max_pool_grad(x: np.ndarray, ct: np.ndarray, kernel: int, stride: int, pad: int = 0) -> np.ndarray:
    """Caffe PoolingLayer::Backward_cpu for MAX: each output's cotangent goes to its window's
    argmax (the first on a tie, as Caffe's mask records it)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    grad = np.zeros_like(x)
    for ph in range(ct.shape[1]):
        for pw in range(ct.shape[2]):
            hstart, wstart = max(ph * stride - pad, 0), max(pw * stride - pad, 0)
            hend, wend = min(ph * stride - pad + kernel, h), min(pw * stride - pad + kernel, w)
            window = x[:, hstart:hend, wstart:wend, :].reshape(n, -1, c)
            flat = window.argmax(axis=1)
            for b in range(n):
                for ch in range(c):
                    i, j = divmod(int(flat[b, ch]), wend - wstart)
                    grad[b, hstart + i, wstart + j, ch] += ct[b, ph, pw, ch]
    return grad


def lrn_backward(x: np.ndarray, ct: np.ndarray, local_size: int = 5, alpha: float = 1e-4,
                 beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's ``LRNLayer::CrossChannelBackward_cpu``: the gradient of :func:`lrn` for the
    output cotangent ``ct``, ``ct * scale^-beta - 2 alpha beta / n * x * sum over the
    channels whose window holds c of ct * top / scale``."""
    x, ct = np.asarray(x, np.float64), np.asarray(ct, np.float64)
    channels = x.shape[-1]
    pre = (local_size - 1) // 2
    post = local_size - 1 - pre
    scale = _lrn_scale(x, local_size, alpha, k)
    top = x * scale ** (-beta)
    ratio = ct * top / scale
    accum = np.zeros_like(x)
    for c in range(channels):  # the channels j with c in [j - pre, j + post]
        lo, hi = max(c - post, 0), min(c + pre, channels - 1)
        accum[..., c] = ratio[..., lo: hi + 1].sum(axis=-1)
    return ct * scale ** (-beta) - 2.0 * alpha * beta / local_size * x * accum


def caffe_max_pool(x, kernel, stride, pad=0):
    return caffe_pool(x, "max", kernel, stride, pad)


def caffe_avg_pool(x, kernel, stride, pad=0):
    return caffe_pool(x, "ave", kernel, stride, pad)


def _lrn_scale(x: np.ndarray, local_size: int, alpha: float, k: float) -> np.ndarray:
    """Caffe's LRN scale ``k + alpha/n * sum_{c'=c-pre..c+post} x_c'^2`` (float64)."""
    channels = x.shape[-1]
    pre = (local_size - 1) // 2
    post = local_size - 1 - pre
    sq = x * x
    scale = np.full_like(x, k)
    for c in range(channels):
        lo, hi = max(c - pre, 0), min(c + post, channels - 1)
        scale[..., c] += alpha / local_size * sq[..., lo: hi + 1].sum(axis=-1)
    return scale


def lrn(x: np.ndarray, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
        k: float = 1.0) -> np.ndarray:
    """Caffe LRN ACROSS_CHANNELS: ``x * (k + alpha/n * sum_{c'=c-pre..c+post} x_c'^2)^-beta``.

    ``pre = (n - 1) // 2``, ``post = n - 1 - pre``; channels outside ``[0, C)`` count as 0.
    """
    x = np.asarray(x, np.float64)
    return x * _lrn_scale(x, local_size, alpha, k) ** (-beta)


def pool2x2(x: np.ndarray, mode: str) -> np.ndarray:
    """2x2 stride-2 pooling, floor rounding (a trailing odd row/column is dropped), max or avg."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    out = np.empty((n, h // 2, w // 2, c))
    for i in range(h // 2):
        for j in range(w // 2):
            window = x[:, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2, :]
            out[:, i, j, :] = window.max(axis=(1, 2)) if mode == "max" else window.mean(axis=(1, 2))
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def caffe_preprocess(rgb: np.ndarray, mean_bgr) -> np.ndarray:
    """RGB 0..255 (H, W, 3) -> a (1, H, W, 3) float64 batch: BGR, per-channel mean subtracted."""
    rgb = np.asarray(rgb, np.float64)
    return (rgb[..., ::-1] - np.asarray(mean_bgr, np.float64))[None]


# --------------------------------------------------------------------------------------------
# VGG-19
# --------------------------------------------------------------------------------------------

VGG_BLOCKS = (2, 2, 4, 4, 4)
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def vgg19(x: np.ndarray, params: dict[str, np.ndarray], pooling: str = "max",
          until: str | None = None) -> dict[str, np.ndarray]:
    """VGG-19 conv stack on a BGR mean-subtracted batch: every ``convB_I`` (pre-ReLU),
    ``reluB_I`` and ``poolB`` (2x2 s2 floor, max or avg) up to ``until`` (default: pool5)."""
    acts: dict[str, np.ndarray] = {}
    for b, n in enumerate(VGG_BLOCKS, start=1):
        for i in range(1, n + 1):
            name = f"conv{b}_{i}"
            x = conv2d(x, params[f"{name}/kernel"], params[f"{name}/bias"], 1, 1)
            acts[name] = x
            if until == name:
                return acts
            x = relu(x)
            acts[f"relu{b}_{i}"] = x
            if until == f"relu{b}_{i}":
                return acts
        x = pool2x2(x, pooling)
        acts[f"pool{b}"] = x
        if until == f"pool{b}":
            return acts
    return acts


# --------------------------------------------------------------------------------------------
# GoogLeNet (bvlc_googlenet_deploy.prototxt)
# --------------------------------------------------------------------------------------------

GOOGLENET_MEAN_BGR = (104.0, 117.0, 123.0)
INCEPTIONS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


class _Stop(Exception):
    pass


def googlenet(x: np.ndarray, params: dict[str, np.ndarray],
              until: str | None = None) -> dict[str, np.ndarray]:
    """BVLC GoogLeNet deploy net on a BGR mean-subtracted batch.

    Returns every blob by its Caffe name (after the in-place ReLU) plus ``<conv>/pre_relu``,
    up to ``until`` (default: ``prob``). The classifier (InnerProduct) is applied at each
    position of ``pool5/7x7_s1``, which is Caffe's InnerProduct when pool5 is 1x1 (224 px).
    """
    acts: dict[str, np.ndarray] = {}

    def put(name, value):
        acts[name] = value
        if name == until:
            raise _Stop

    def conv(name, inp, stride=1, pad=0):
        pre = conv2d(inp, params[f"{name}/kernel"], params[f"{name}/bias"], stride, pad)
        put(f"{name}/pre_relu", pre)
        out = relu(pre)
        put(name, out)
        return out

    try:
        x = conv("conv1/7x7_s2", x, stride=2, pad=3)
        x = caffe_max_pool(x, 3, 2)
        put("pool1/3x3_s2", x)
        x = lrn(x, 5, 1e-4, 0.75)
        put("pool1/norm1", x)
        x = conv("conv2/3x3_reduce", x)
        x = conv("conv2/3x3", x, pad=1)
        x = lrn(x, 5, 1e-4, 0.75)
        put("conv2/norm2", x)
        x = caffe_max_pool(x, 3, 2)
        put("pool2/3x3_s2", x)
        for block in INCEPTIONS:
            p = f"inception_{block}"
            b1 = conv(f"{p}/1x1", x)
            b2 = conv(f"{p}/3x3", conv(f"{p}/3x3_reduce", x), pad=1)
            b3 = conv(f"{p}/5x5", conv(f"{p}/5x5_reduce", x), pad=2)
            pooled = caffe_max_pool(x, 3, 1, 1)
            put(f"{p}/pool", pooled)
            b4 = conv(f"{p}/pool_proj", pooled)
            x = np.concatenate([b1, b2, b3, b4], axis=-1)
            put(f"{p}/output", x)
            if block == "3b":
                x = caffe_max_pool(x, 3, 2)
                put("pool3/3x3_s2", x)
            elif block == "4e":
                x = caffe_max_pool(x, 3, 2)
                put("pool4/3x3_s2", x)
        x = caffe_avg_pool(x, 7, 1)
        put("pool5/7x7_s1", x)
        logits = np.tensordot(x, np.asarray(params["loss3/classifier/kernel"], np.float64),
                              axes=([3], [0])) + params["loss3/classifier/bias"]
        put("loss3/classifier", logits)
        put("prob", softmax(logits))
    except _Stop:
        pass
    return acts


_POOLS_BEFORE = (("conv1/", 0), ("pool1/", 1), ("conv2/", 1), ("pool2/", 2), ("inception_3", 2),
                 ("pool3/", 3), ("inception_4", 3), ("pool4/", 4), ("inception_5", 4),
                 ("pool5/", 5), ("loss3/", 5), ("prob", 5))
_STRIDED_POOLS = ((3, 2), (3, 2), (3, 2), (3, 2), (7, 1))  # pool1..pool4 MAX, pool5 AVE; no pad


def googlenet_output_size(size: int, layer: str) -> int:
    """Spatial length of a GoogLeNet blob from the prototxt geometry (0: empty).

    conv1 is 7x7 s2 p3; every other convolution and the inception pools keep the size; the
    size changes only at pool1..pool5.
    """
    pools = next(count for prefix, count in _POOLS_BEFORE if layer.startswith(prefix))
    n = (size + 2 * 3 - 7) // 2 + 1
    for kernel, stride in _STRIDED_POOLS[:pools]:
        n = max(caffe_pooled_size(n, kernel, stride, 0), 0) if n > 0 else 0
    return n
