"""Planning a style transfer: every setting checked and every image read, with the sizes,
bands and memory of each scale, before any network is loaded or anything runs on a device.
:func:`plan_style`'s signature is the one definition of style transfer's settings."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import options
from ..errors import SettingsError
from ..media import color, images as media
from ..media.masks import check_aspect, check_not_empty, check_region_count, load_mask, mask_list, mask_name
from ..nets import get_spec
from ..objectives.bands import band_geometry
from ..objectives.gatys import CONTENT_LAYERS, STYLE_LAYERS, STYLE_LOSSES, Objective
from ..runtime import memory
from ..runtime import precision as precision_mod

__all__ = ["plan_style", "StylePlan", "default_scales", "check_scales", "scale_sizes", "OPTIMIZERS", "INITS",
           "DEFAULT_LEARNING_RATE"]

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("random", "image", "content")
#: Learning rates neural-style uses: 1 for L-BFGS (no line search), 10 for Adam.
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 1e1}
#: The L-BFGS history (2 * corrections * pixels * 3 floats) is capped to this many bytes.


def default_scales(size: int, coarsest: int = 512) -> tuple[int, ...]:
    """Automatic coarse-to-fine scales: ``size`` halved until at most ``coarsest``.

    >>> default_scales(2048)
    (512, 1024, 2048)
    """
    scales = [int(size)]
    while scales[0] > coarsest:
        scales.insert(0, scales[0] // 2)
    return tuple(scales)


def _as_list(value, name: str, cast=float) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
    else:
        values = [value]
    if not values:
        raise SettingsError(f"{name}: give at least one value")
    return values


def _fmt(value: float) -> str:
    return f"{value:g}"


def load_image_or_array(image, size_longest: int | None, what: str) -> np.ndarray:
    """An image path read (scaled to ``size_longest``), or an (H, W, 3) RGB array checked and scaled."""
    if isinstance(image, (str, os.PathLike)):
        return media.load_image(image, size=size_longest)
    arr = np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise SettingsError(f"{what}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if size_longest is not None:
        arr = media.resize(arr, media.fit_size(*arr.shape[:2], size_longest))
    return arr


def _iterations_per_scale(num_iterations, n_scales: int) -> list[int]:
    number = options.get("num_iterations")
    if isinstance(num_iterations, (list, tuple)):
        its = number.check_all(num_iterations)
        if len(its) != n_scales:
            raise SettingsError(f"num_iterations: {len(its)} values for {n_scales} scales")
    else:
        n = number.check(num_iterations)
        its = [n] + [max(min(n, 50), n // 2 ** k) for k in range(1, n_scales)]
    return its


@dataclass
class StylePlan:
    """Everything :func:`stylize` will do, checked and read, before any network is loaded.

    Built by :func:`plan_style`; :func:`run_plan` carries it out. ``describe`` is what
    ``jaxdream style --dry-run`` prints.
    """

    spec: Any
    content_full: np.ndarray
    style_full: list
    init: Any
    init_full: np.ndarray | None
    blend: list
    sweeps: dict
    content_layers: tuple
    style_layers: tuple
    scales: tuple
    sizes: list
    style_sizes: list
    iterations: list
    optimizer: str
    lr: float
    corrections: int
    pooling: str
    original_colors: bool
    color_transfer: str | None
    temporal: tuple | None
    remat: bool | None
    style_scale: float = 1.0
    memory: int = 0
    band_rows: list = field(default_factory=list)  # per scale: None (whole image) or rows per band
    precision: str = "float32"
    contents_full: list = field(default_factory=list)  # a batch of content images (the first is content_full)
    tol_loss_relative: float = field(kw_only=True)  # 0: every scale runs its full budget
    tol_loss_relative_interval: int = field(kw_only=True)
    style_loss: str = field(default="gram", kw_only=True)
    ema: float = field(default=0.0, kw_only=True)  # Adam's iterate average (0: off)
    lbfgs_precondition: float = field(default=0.0, kw_only=True)  # pyramid_preconditioner's weight
    masks: list = field(default_factory=list, kw_only=True)  # (H, W) per style, at content_full's size
    style_masks: list = field(default_factory=list, kw_only=True)  # None or (h, w) per style image
    content_mask: np.ndarray | None = field(default=None, kw_only=True)
    mask_names: dict = field(default_factory=dict, kw_only=True)  # for the settings record

    @property
    def masked(self) -> bool:
        """Whether any mask or the Wasserstein loss is used (whole-image programs only)."""
        return bool(self.masks) or self.content_mask is not None or any(
            m is not None for m in self.style_masks) or self.style_loss != "gram"

    @property
    def contents(self) -> list:
        """Every content image of the run: a batch of them, or the one."""
        return self.contents_full or [self.content_full]

    @property
    def combos(self) -> int:
        """Swept setting combinations per content image."""
        return math.prod(len(v) for v in self.sweeps.values())

    @property
    def batch(self) -> int:
        """Images optimised at once: every swept combination of every content image."""
        return len(self.contents) * self.combos

    def describe(self) -> str:
        steps = ", ".join(f"{w}x{h} for {n} iterations" + (f" (bands of {b} rows)" if b else "")
                          for (h, w), n, b in zip(self.sizes, self.iterations,
                                                  self.band_rows or [None] * len(self.sizes)))
        if self.tol_loss_relative > 0:
            steps += (f" (each stopping once the loss changes by less than {self.tol_loss_relative:g} "
                      f"in {self.tol_loss_relative_interval} iterations)")
        optimizer = self.optimizer + (f" with a pyramid preconditioner of weight {self.lbfgs_precondition:g}"
                                      if self.lbfgs_precondition else "")
        return (f"style transfer: {steps}; {self.batch} image(s) at once; {optimizer}; "
                f"about {self.memory / 2**30:.1f} GiB of memory")


def _check_numbers(sweeps: dict, style_scale, lbfgs_num_correction, chunk, learning_rate, blend,
                   tolerance: tuple) -> None:
    for name, values in sweeps.items():
        options.get(name).check_all(values)
    options.get("lbfgs_num_correction").check(lbfgs_num_correction)
    options.get("chunk").check(chunk)
    options.get("tol_loss_relative").check(tolerance[0])
    options.get("tol_loss_relative_interval").check(tolerance[1])
    options.get("style_scale").check(style_scale)
    if learning_rate is not None:
        options.get("learning_rate").check(learning_rate)
    options.get("style_blend_weights").check_all(blend)
    if sum(blend) <= 0:
        raise SettingsError(f"style blend weights must be non-negative with a positive sum, "
                            f"got {', '.join(map(_fmt, blend))}")


def check_scales(scales, size: int) -> tuple[int, ...]:
    """The coarse-to-fine scales of a run: ``scales`` checked, or :func:`default_scales`."""
    options.get("size").check(size)
    if scales is None or len(scales) == 0:
        scales = default_scales(size) if scales is None else (size,)
    scales = tuple(options.get("scales").check_all(scales))
    if list(scales) != sorted(scales):
        raise SettingsError(f"scales must be increasing positive sizes, got {scales}")
    return scales


def _check_temporal(temporal, content_full: np.ndarray):
    if temporal is None:
        return None
    t_image, t_mask, t_weight = temporal
    t_image = np.asarray(t_image, np.float32)
    t_mask = np.asarray(t_mask, np.float32)
    if t_image.shape != content_full.shape or t_mask.shape != content_full.shape[:2]:
        raise SettingsError(f"temporal target {t_image.shape} and mask {t_mask.shape} must match "
                            f"the content image {content_full.shape}")
    return t_image, t_mask, options.get("temporal_weight").check(t_weight)


def _check_plan_sizes(plan: StylePlan, style_scale: float, requested: int | None = None) -> None:
    """Every picture the run computes on: big enough for the layers, within the pixel ceiling
    and (estimated) within the device's memory."""
    spec = plan.spec
    layers = tuple(dict.fromkeys(plan.content_layers + plan.style_layers))
    spec.check_size(*plan.sizes[0], layers)
    for hw in plan.style_sizes[0]:
        try:
            spec.check_size(*hw, plan.style_layers)
        except SettingsError as e:
            raise SettingsError(f"style image (at style scale {style_scale:g}): {e}") from None
    (h, w), scale = plan.sizes[-1], plan.scales[-1]
    memory.check_pixels(h, w, f"size {scale}")
    for sh, sw in plan.style_sizes[-1]:
        memory.check_pixels(sh, sw, f"style image at style scale {style_scale:g} x size {scale}")
    available = memory.available_bytes()
    plan.band_rows = [_choose_band_rows(plan, hw, shws, available, requested)
                      for hw, shws in zip(plan.sizes, plan.style_sizes)]
    plan.memory = _plan_bytes(plan, plan.sizes[-1], plan.style_sizes[-1], plan.band_rows[-1])
    memory.check_fits(plan.memory, f"style transfer at {w}x{h}"
                      + (f" ({plan.batch} images at once)" if plan.batch > 1 else "")
                      + (f" in bands of {plan.band_rows[-1]} rows" if plan.band_rows[-1] else ""), available)


def _band_geometry(plan: StylePlan) -> tuple[int, int]:
    """(alignment, halo) of the bands of a plan's objective (:func:`jaxdream.objectives.bands.band_geometry`)."""
    return band_geometry(Objective(plan.spec.name, plan.pooling, plan.content_layers, plan.style_layers))


def _plan_bytes(plan: StylePlan, hw, style_hws, band_rows: int | None) -> int:
    """Memory of one scale of a plan, whole image or band by band."""
    corrections = plan.corrections if plan.optimizer == "lbfgs" else 2
    h, w = hw
    if band_rows:
        halo = _band_geometry(plan)[1]
        return max([memory.band_bytes(h, w, band_rows, halo, corrections)]
                   + [memory.band_bytes(sh, sw, band_rows, halo) for sh, sw in style_hws])
    return max([memory.style_bytes(h, w, plan.batch, corrections)]
               + [memory.forward_bytes(sh, sw) for sh, sw in style_hws])


def _choose_band_rows(plan: StylePlan, hw, style_hws, available, requested: int | None) -> int | None:
    """Rows per band for one scale: ``requested`` if given, None when the whole image fits,
    else the largest aligned band that fits (at least one alignment step)."""
    if plan.spec.name != "vgg19":
        return None
    align = _band_geometry(plan)[0]
    if requested:
        if requested % align:
            raise SettingsError(f"band rows {requested}: must be a multiple of {align} for these layers")
        if plan.batch > 1:
            raise SettingsError(f"band rows {requested}: bands evaluate one image at a time; a sweep or "
                                f"a batch of content images ({plan.batch} images) runs whole images")
        return requested
    have = 0.9 * available[0]  # the estimates are XLA's analysis; leave room for the rest
    if _plan_bytes(plan, hw, style_hws, None) <= have or plan.batch > 1:
        return None  # fits (or a sweep: refused by the memory check with its own message)
    rows = max(align, (max(hw[0], *[s[0] for s in style_hws]) // align) * align)
    while rows > align and _plan_bytes(plan, hw, style_hws, rows) > have:
        rows = max(align, (rows // 2 // align) * align)
    return rows


def scale_sizes(shape: tuple[int, int], scales: Sequence[int]) -> list[tuple[int, int]]:
    """(h, w) of a content image of ``shape`` at each coarse-to-fine scale (longest sides)."""
    return [media.fit_size(*shape[:2], s) for s in scales]


def _load_contents(content, scales, color_transfer, temporal) -> list[np.ndarray]:
    """The content image, or a batch of them (a list), read; a batch must share its size at
    every scale and cannot use per-content style recolouring or a temporal term."""
    if not isinstance(content, (list, tuple)):
        return [load_image_or_array(content, None, "content")]
    if not content:
        raise SettingsError("give at least one content image")
    images = [load_image_or_array(c, None, f"content image {i + 1}") for i, c in enumerate(content)]
    if len(images) > 1 and (color_transfer or temporal is not None):
        raise SettingsError("a batch of content images cannot use " + (
            "--color-transfer (it recolours the styles for each content image); run them one at a time"
            if color_transfer else "a temporal term"))
    first = scale_sizes(images[0].shape, scales)
    for i, image in enumerate(images[1:], 2):
        if scale_sizes(image.shape, scales) != first:
            h, w = first[-1]
            raise SettingsError(f"content image {i} is {image.shape[1]}x{image.shape[0]}: a batch of "
                                f"content images must share its size ({w}x{h} at size {scales[-1]})")
    return images


def plan_style(content, styles, *,
               style_blend_weights: Sequence[float] | None = None,
               content_weight: float | Sequence[float] = options.default("content-weight"),
               style_weight: float | Sequence[float] = options.default("style-weight"),
               tv_weight: float | Sequence[float] = options.default("tv-weight"),
               content_layers: Sequence[str] = CONTENT_LAYERS,
               style_layers: Sequence[str] = STYLE_LAYERS,
               num_iterations: int | Sequence[int] = options.default("iterations", "style"),
               optimizer: str = options.default("optimizer"),
               learning_rate: float | None = None,
               lbfgs_num_correction: int = options.default("lbfgs-num-correction"),
               size: int = options.default("size", "style"),
               scales: Sequence[int] | None = None,
               init: str | Any = options.default("init", "style"),
               pooling: str = options.default("pooling"),
               style_scale: float = options.default("style-scale"),
               original_colors: bool = False,
               color_transfer: str | None = None,
               seed: int | Sequence[int] = options.default("seed"),
               temporal: tuple | None = None,
               model: str = options.default("model", "style"),
               chunk: int = options.default("chunk"),
               remat: bool | None = None,
               band_rows: int | None = None,
               precision: str = options.default("precision"),
               tol_loss_relative: float = options.default("tol-loss-relative", "style"),
               tol_loss_relative_interval: int = options.default("tol-loss-relative-interval", "style"),
               masks: Sequence | None = None,
               content_mask=None,
               style_masks: Sequence | None = None,
               style_loss: str = options.default("style-loss"),
               ema: float = options.default("ema"),
               lbfgs_precondition: float = options.default("lbfgs-precondition", "style")) -> StylePlan:
    """Check every setting and read every image of a :func:`stylize` run (same arguments,
    without the network and callback ones); nothing is computed or allocated on a device.
    (Long by its signature alone: it is the one definition of style transfer's settings; the
    checks are the short functions it calls.)

    ``masks`` (one per style), ``content_mask`` and ``style_masks`` (one per style image,
    None for the whole image) are paths or (H, W) arrays in 0..1 of the content's (style
    image's) aspect ratio; they are resized to every scale and layer. Masks and
    ``style_loss="wasserstein"`` need whole-image programs (no bands).

    ``band_rows`` evaluates the objective band by band (:mod:`jaxdream.objectives.bands`, exact) with this
    many rows per band; by default a scale runs band by band only when its whole-image program
    would not fit in the device's memory.

    ``tol_loss_relative`` (artistic-videos' ``-tol_loss_relative``; 0, the default, is off)
    ends a scale early: at every multiple of ``tol_loss_relative_interval`` iterations the total
    loss is compared with the one an interval before, and the scale stops when
    ``|before - now| < tol_loss_relative * |before|`` for every batch member (the first check
    is at twice the interval). Chunks are cut at the multiples of the interval.

    ``lbfgs_precondition`` (L-BFGS only; 0, the default, is neural-style's L-BFGS) is the weight
    ``w`` of :func:`pyramid_preconditioner`, L-BFGS's initial inverse Hessian: the picture's
    block means over 2..32 px move up to ``1 + 5w`` times as far as single pixels. A video's
    later frames use 1 (:class:`jaxdream.video.StyleFrames`).

    Raises:
        SettingsError, LayerError, MediaError: one line naming the bad value or file.
    """
    _check_choices(band_rows, precision, optimizer, style_loss, ema, lbfgs_precondition)
    styles, blend = _style_list(styles, style_blend_weights)
    sweeps = {"content_weight": _as_list(content_weight, "content weight"),
              "style_weight": _as_list(style_weight, "style weight"),
              "tv_weight": _as_list(tv_weight, "tv weight"),
              "seed": _as_list(seed, "seed")}
    _check_numbers(sweeps, style_scale, lbfgs_num_correction, chunk, learning_rate, blend,
                   (tol_loss_relative, tol_loss_relative_interval))
    sweeps = {k: [options.get(k).kind(v) for v in vs] for k, vs in sweeps.items()}
    _check_sources(color_transfer, init)
    spec = get_spec(model)
    if pooling not in spec.poolings:
        raise SettingsError(f"{spec.name} supports pooling {', '.join(spec.poolings)}, not '{pooling}'")
    content_layers = spec.check_layers(content_layers)
    style_layers = spec.check_layers(style_layers)
    scales = check_scales(scales, size)
    iterations = _iterations_per_scale(num_iterations, len(scales))
    lr = DEFAULT_LEARNING_RATE[optimizer] if learning_rate is None else float(learning_rate)
    im = _read_images(content, styles, init, scales, style_scale, color_transfer, temporal)
    plan = StylePlan(spec, im.content_full, im.style_full, init, im.init_full, blend, sweeps, content_layers,
                     style_layers, scales, im.sizes, im.style_sizes, iterations, optimizer, lr,
                     int(lbfgs_num_correction), pooling, original_colors, color_transfer,
                     _check_temporal(temporal, im.content_full), remat, float(style_scale),
                     precision=precision, contents_full=im.contents_full if len(im.contents_full) > 1 else [],
                     tol_loss_relative=float(tol_loss_relative),
                     tol_loss_relative_interval=int(tol_loss_relative_interval),
                     style_loss=style_loss, ema=float(ema), lbfgs_precondition=float(lbfgs_precondition),
                     **_load_masks(masks, content_mask, style_masks, im.content_full, im.style_full))
    _check_bands(plan, style_scale, band_rows)
    return plan


def _check_choices(band_rows, precision: str, optimizer: str, style_loss: str, ema, lbfgs_precondition) -> None:
    """The settings chosen from a list (and the ones only one optimiser takes)."""
    if band_rows is not None:
        options.get("band_rows").check(band_rows)
    precision_mod.check(precision)
    if optimizer not in OPTIMIZERS:
        raise SettingsError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}")
    _check_style_loss_and_ema(style_loss, ema, optimizer)
    options.get("lbfgs_precondition").check(lbfgs_precondition)
    if lbfgs_precondition and optimizer != "lbfgs":
        raise SettingsError("--lbfgs-precondition shapes L-BFGS's steps; it needs --optimizer lbfgs")


def _style_list(styles, style_blend_weights) -> tuple[list, list]:
    """The style images as a list (one path or array becomes a list of one) and their blend
    weights (default equal), one per style."""
    if isinstance(styles, (str, os.PathLike)) or (isinstance(styles, np.ndarray) and styles.ndim == 3):
        styles = [styles]
    styles = list(styles)
    if not styles:
        raise SettingsError("give at least one style image")
    blend = [1.0] * len(styles) if style_blend_weights is None else _as_list(
        style_blend_weights, "style blend weights")
    if len(blend) != len(styles):
        raise SettingsError(f"{len(blend)} style blend weights for {len(styles)} style images")
    return styles, blend


def _check_sources(color_transfer, init) -> None:
    """The colour transfer is a known one and the init a known name or an existing file."""
    if color_transfer is not None and color_transfer not in color.COLOR_TRANSFERS:
        raise SettingsError(f"unknown colour transfer '{color_transfer}'; use one of "
                            f"{', '.join(color.COLOR_TRANSFERS)}")
    if isinstance(init, str) and init not in INITS and not os.path.exists(init):
        raise SettingsError(f"init must be one of {', '.join(INITS)} or an image file; "
                            f"'{init}' is neither")


class _Images(NamedTuple):
    content_full: np.ndarray
    contents_full: list       # every content image of a batch (the first is content_full)
    style_full: list          # recoloured when a colour transfer is asked for
    init_full: np.ndarray | None
    sizes: list               # (h, w) of the content per scale
    style_sizes: list         # per scale, (h, w) per style image


def _read_images(content, styles: list, init, scales, style_scale, color_transfer, temporal) -> _Images:
    """Every image of a run, read before the network loads (so a bad file fails fast), with the
    sizes they take at each scale."""
    contents_full = _load_contents(content, scales, color_transfer, temporal)
    content_full = contents_full[0]
    style_full = [load_image_or_array(s, None, f"style image {i + 1}") for i, s in enumerate(styles)]
    if color_transfer:
        style_full = [color.match_color(s, content_full, color_transfer) for s in style_full]
    sizes = scale_sizes(content_full.shape[:2], scales)
    style_sizes = [[media.fit_size(*s.shape[:2], max(1, round(sc * style_scale))) for s in style_full]
                   for sc in scales]
    init_full = None
    if not isinstance(init, str) or init not in INITS:
        init_full = load_image_or_array(init, None, "init image")
    return _Images(content_full, contents_full, style_full, init_full, sizes, style_sizes)


def _check_bands(plan: StylePlan, style_scale: float, band_rows) -> None:
    """Set the plan's memory and bands per scale (:func:`_check_plan_sizes`); masks and the
    Wasserstein loss need whole-image programs: no bands, asked for or needed."""
    if plan.masked and band_rows is not None:
        raise SettingsError("masks and --style-loss wasserstein need whole-image programs; "
                            "they cannot run band by band (--band-rows)")
    _check_plan_sizes(plan, style_scale, band_rows)
    if plan.masked and any(plan.band_rows):
        (h, w), scale = plan.sizes[-1], plan.scales[-1]
        raise SettingsError(f"style transfer at {w}x{h} (size {scale}) only fits in memory band by band, "
                            f"and masks and --style-loss wasserstein need whole-image programs; use a smaller --size")


def _check_style_loss_and_ema(style_loss: str, ema, optimizer: str) -> None:
    if style_loss not in STYLE_LOSSES:
        raise SettingsError(f"unknown style loss '{style_loss}'; use one of {', '.join(STYLE_LOSSES)}")
    if options.get("ema").check(ema) > 0 and optimizer != "adam":
        raise SettingsError(f"--ema averages Adam's iterates; use it with --optimizer adam, not {optimizer}")


def _load_masks(masks, content_mask, style_masks, content_full: np.ndarray, style_full: list) -> dict:
    """Read and check the masks of a run (:class:`StylePlan` fields): one region mask per style
    and one mask (or None) per style image, none empty; every mask of its image's aspect ratio."""
    n = len(style_full)
    names: dict = {}
    regions = mask_list(masks)
    check_region_count(regions, n)
    loaded = []
    for i, m in enumerate(regions, 1):
        what = mask_name(m, i)
        mask = load_mask(m, what)
        check_aspect(mask, content_full.shape[:2], what, "the content image")
        check_not_empty(mask, what, f"style image {i} would apply nowhere")
        loaded.append(mask)
    if regions:
        names["masks"] = [str(m) if isinstance(m, (str, os.PathLike)) else "array" for m in regions]
    cmask = None
    if content_mask is not None:
        what = mask_name(content_mask, None, "content mask")
        cmask = load_mask(content_mask, what)
        check_aspect(cmask, content_full.shape[:2], what, "the content image")
        names["content_mask"] = str(content_mask) if isinstance(content_mask, (str, os.PathLike)) else "array"
    given = mask_list(style_masks)
    if given and len(given) != n:
        raise SettingsError(f"{len(given)} style masks for {n} style image{'s' if n > 1 else ''}: give one "
                            f"--style-mask per --style, in the same order ('none' for a whole style image)")
    smasks = []
    for i, (m, style_img) in enumerate(zip(given, style_full), 1):
        if m is None or (isinstance(m, str) and m.lower() == "none"):
            smasks.append(None)
            continue
        what = mask_name(m, i, "style mask")
        mask = load_mask(m, what)
        check_aspect(mask, style_img.shape[:2], what, f"style image {i}")
        check_not_empty(mask, what, f"style image {i} would give no style")
        smasks.append(mask)
    if any(m is not None for m in smasks):
        names["style_masks"] = [None if m is None or (isinstance(m, str) and m.lower() == "none") else
                                str(m) if isinstance(m, (str, os.PathLike)) else "array" for m in given]
    return {"masks": loaded, "content_mask": cmask, "style_masks": smasks, "mask_names": names}

