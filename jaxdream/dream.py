"""DeepDream: gradient ascent on a network's activations (Mordvintsev et al., google/deepdream).

The defaults reproduce google/deepdream's notebook on BVLC GoogLeNet: end layer
``inception_4c/output``, the L2 objective (gradient = activation), 10 steps on each of 4 octaves
scaled by 1.4, step size 1.5 applied as ``step / mean(|g|)``, a random shift (jitter) of up to
32 px per step, only the added detail carried from octave to octave, pixels kept in 0..255.

Structure: :func:`ascend` runs ``steps`` ascent steps on one image shape (a jitted
:func:`ascent_step` per step on CPU, one jitted ``lax.fori_loop`` on GPU/TPU); :func:`dream` runs
the octaves around it. Settings that change shapes or the
traced program (layers, channels, objective, steps, tiling, normalisation) form the static
:class:`Objective`/:class:`Schedule`; layer weights and the step size are traced arrays.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import media, options
from .errors import SettingsError
from .media.masks import check_aspect, load_mask, resize_mask
from .nets import get_spec, preprocess
from .objectives.dream import (NORMALIZATIONS, class_logit, layer_objective,
                               normalize_gradient)
from .nets.classes import class_index
from .nets.network import Network, _features_jit, load_network
from .optim.driver import in_jit_loop_default
from .runtime import precision
from .runtime.cache import compile_ahead

#: ``normalize="auto"`` (the command line's default): ``lapnorm`` with this many levels for a class
#: dream (its low frequencies draw the class's shapes: balloons, a banana, a traffic light, where
#: ``mean`` leaves faint texture; both make the class GoogLeNet's top-1), ``mean`` otherwise
#: (google/deepdream's).
CLASS_NORMALIZE = ("lapnorm", 5)
CLASS_LAYER = "loss3/classifier"
#: A class dream's objective reads this layer: the classifier's logit on its global average.
CLASS_FEATURES = "inception_5b/output"


@dataclass(frozen=True)
class Objective:
    """What to maximise (static: changing it recompiles).

    Attributes:
        model: network name.
        layers: layer names whose activations are pushed up.
        channels: channel indices kept in every layer's objective (None: all).
        kind: ``l2`` (google/deepdream's objective_L2), ``guide`` (objective_guide: each
            position pushed toward its best-matching guide feature), or ``class`` (the classifier
            logit of ``class_index`` on the global average of ``layers[0]``: see
            :func:`class_logit`).
        class_index: ImageNet class for ``kind="class"``.
        pooling: VGG-19 pooling mode.
    """

    model: str = "googlenet"
    layers: tuple[str, ...] = ("inception_4c/output",)
    channels: tuple[int, ...] | None = None
    kind: str = "l2"
    class_index: int | None = None
    pooling: str = "max"
    precision: str = "float32"


# ----------------------------------------------------------------------------------------------
# the objective's value


def _objective_value(params, rgb, weights, guides, obj: Objective) -> jax.Array:
    spec = get_spec(obj.model)
    net_params, x = precision.network_inputs(params, preprocess.to_model(rgb, spec.mean_bgr), obj.precision)
    feats = precision.to_float32(spec.make(obj.layers, obj.pooling).apply(net_params, x), obj.precision)
    if obj.kind == "class":
        return class_logit(params["params"][CLASS_LAYER], feats[obj.layers[0]], obj.class_index)
    total = 0.0
    for i, name in enumerate(obj.layers):
        guide = None if guides is None else guides[i]
        total = total + weights[i] * layer_objective(feats[name], obj.kind, obj.channels, guide,
                                                     obj.class_index)
    return total


_objective_jit = jax.jit(_objective_value, static_argnames="obj")


# ----------------------------------------------------------------------------------------------
# tiled gradients


def tile_grid(length: int, tile: int) -> tuple[int, int]:
    """(number of tiles, tile length) covering ``length`` with tiles of at most ``tile``."""
    count = max(1, math.ceil(length / tile))
    return count, math.ceil(length / count)


#: Up to this many batches of tiles are unrolled in the step program; more go through lax.map
#: (a loop, so that compile time and program size stay bounded for huge images).
UNROLLED_TILE_BATCHES = 4


def _spread(tiles: jax.Array, mesh) -> jax.Array:
    """Ask XLA to lay a batch of tiles across the mesh (axis 0 split)."""
    if mesh is None:
        return tiles
    from jax.sharding import NamedSharding, PartitionSpec
    return lax.with_sharding_constraint(tiles, NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])))


def tiled_gradient(grad_fn: Callable[[jax.Array], jax.Array], image: jax.Array, tile_size: int,
                   tile_batch: int = 4, mesh=None) -> jax.Array:
    """Gradient of an (H, W, 3) image computed in equal tiles of at most ``tile_size``.

    ``grad_fn`` maps a batch (N, h, w, 3) to its gradient. The image is edge-padded to a whole
    number of equal tiles; the tiles run in vmapped groups of ``tile_batch`` (up to
    :data:`UNROLLED_TILE_BATCHES` groups one after another in the program, more through
    ``lax.map``), so memory is bounded by the group, not the image. With one tile this is
    exactly ``grad_fn(image[None])[0]``. With a ``mesh`` each batch (rounded up to a multiple
    of the device count, the tile list padded by repeating its last tile) is split across the
    devices; the padding's gradients are dropped.
    """
    h, w, c = image.shape
    nh, th = tile_grid(h, tile_size)
    nw, tw = tile_grid(w, tile_size)
    if nh * nw == 1:
        return grad_fn(image[None])[0]
    padded = jnp.pad(image, ((0, nh * th - h), (0, nw * tw - w), (0, 0)), mode="edge")
    tiles = padded.reshape(nh, th, nw, tw, c).transpose(0, 2, 1, 3, 4).reshape(nh * nw, th, tw, c)
    n, batch = nh * nw, min(tile_batch, nh * nw)
    if mesh is not None and mesh.size > 1:
        batch = -(-batch // mesh.size) * mesh.size
        extra = -n % batch
        tiles = jnp.concatenate([tiles, jnp.repeat(tiles[-1:], extra, axis=0)]) if extra else tiles
    else:
        mesh = None
    one = lambda t: grad_fn(t[None])[0]
    if tiles.shape[0] <= batch * UNROLLED_TILE_BATCHES:
        # a few batches: written out one after another, not a loop (XLA:CPU runs convolutions
        # inside a while loop markedly slower; see ascend)
        grads = jnp.concatenate([_spread(jax.vmap(one)(_spread(tiles[i:i + batch], mesh)), mesh)
                                 for i in range(0, tiles.shape[0], batch)])
    else:
        grads = lax.map(one, tiles, batch_size=batch)
    grads = grads[:n].reshape(nh, nw, th, tw, c).transpose(0, 2, 1, 3, 4).reshape(nh * th, nw * tw, c)
    return grads[:h, :w]


# ----------------------------------------------------------------------------------------------
# the jitted ascent


def _ascent_body(params, img, key, i, weights, step_size, guides, obj: Objective, sched: Schedule, mask=None):
    """Step ``i``: roll by a random shift, gradient (tiled), roll back, normalise (and mask), add,
    clip. The mask (H, W) applies to the rolled-back gradient, so it stays on the image."""
    h, w, _ = img.shape
    tiled = tile_grid(h, sched.tile_size)[0] * tile_grid(w, sched.tile_size)[0] > 1
    value_grad = jax.grad(lambda x: _objective_value(params, x, weights, guides, obj))
    k_jitter, k_tile = jax.random.split(jax.random.fold_in(key, i))
    shift = jax.random.randint(k_jitter, (2,), -sched.jitter, sched.jitter + 1)
    if tiled:
        shift = shift + jax.random.randint(k_tile, (2,), 0, jnp.array([h, w]))
    rolled = jnp.roll(img, (shift[0], shift[1]), axis=(0, 1))
    g = tiled_gradient(value_grad, rolled, sched.tile_size, sched.tile_batch, sched.mesh)
    g = jnp.roll(g, (-shift[0], -shift[1]), axis=(0, 1))
    g = normalize_gradient(g, sched.normalize, sched.lapnorm_levels, mask)
    return jnp.clip(img + step_size * g, 0.0, 255.0)


@functools.partial(jax.jit, static_argnames=("obj", "sched"))
def ascent_step(params, image: jax.Array, key: jax.Array, i: jax.Array, weights: jax.Array,
                step_size: jax.Array, guides: tuple | None, mask: jax.Array | None = None, *, obj: Objective,
                sched: Schedule) -> jax.Array:
    """Ascent step number ``i`` (traced) on an (H, W, 3) RGB 0..255 image, jitted on its own.

    ``sched.steps`` is ignored (pass any): every step count shares this one program per shape.
    ``mask`` (H, W) in 0..1 (traced) weights the step (see :func:`normalize_gradient`).
    """
    return _ascent_body(params, image, key, i, weights, step_size, guides, obj, sched, mask)


@functools.partial(jax.jit, static_argnames=("obj", "sched"))
def _ascend_in_jit(params, image, key, steps, weights, step_size, guides, mask=None, *, obj: Objective,
                   sched: Schedule):
    """``steps`` (traced: every step count shares the program) ascent steps in one
    ``lax.fori_loop``; ``sched.steps`` is ignored."""
    return lax.fori_loop(0, steps, lambda i, img: _ascent_body(params, img, key, i, weights, step_size,
                                                                guides, obj, sched, mask), image)


def ascend(params, image: jax.Array, key: jax.Array, weights: jax.Array, step_size: jax.Array,
           guides: tuple | None, *, obj: Objective, sched: Schedule, in_jit_loop: bool | None = None,
           mask: jax.Array | None = None, on_step: Callable[[int, jax.Array], None] | None = None) -> jax.Array:
    """``sched.steps`` DeepDream ascent steps on an (H, W, 3) RGB 0..255 image.

    Each step rolls the image by a random shift (up to ``sched.jitter`` px, plus up to a tile when
    the image is tiled, so tile seams move every step), takes the objective's gradient, rolls it
    back, normalises it, adds ``step_size`` times it and clips to 0..255. Step ``i`` draws its
    shift from ``fold_in(key, i)``.

    ``in_jit_loop`` (default :func:`jaxdream.style.in_jit_loop_default`: not on CPU, where
    XLA runs the gradient inside a while loop 1.6 times slower) runs the steps as one
    ``lax.fori_loop`` inside ``jit``; otherwise a Python loop calls the jitted
    :func:`ascent_step`. Both give the same image.

    ``mask`` (H, W) in 0..1 multiplies every step (applied after the gradient is rolled back, so
    it stays aligned with the image; statistics of the normalisation taken where it weights):
    the image changes only where the mask is non-zero.

    ``on_step(i, image)`` is called after every step (the steps then run one program call each,
    on any device, with the same result).
    """
    if on_step is not None:
        in_jit_loop = False  # a call back after every step: one program call per step
    fn, args, kwargs = ascent_program(params, image, key, weights, step_size, guides, obj=obj, sched=sched,
                                      in_jit_loop=in_jit_loop, mask=mask)
    if fn is _ascend_in_jit:
        return fn(*args, **kwargs)
    for i in range(sched.steps):
        image = fn(params, image, key, jax.device_put(np.int32(i)), weights, step_size, guides, **kwargs)
        if on_step is not None:
            on_step(i, image)
    return image


def ascent_program(params, image, key, weights, step_size, guides, *, obj: Objective, sched: Schedule,
                   in_jit_loop: bool | None = None, mask=None) -> tuple[Callable, tuple, dict]:
    """``(jitted function, args, kwargs)`` of the first call :func:`ascend` makes.

    On CPU (``in_jit_loop`` False by default) that is :func:`ascent_step` for step 0; otherwise
    the whole ``lax.fori_loop`` with the step count traced. Either way the schedule passed is a
    one-step one, so every step count shares the program of a shape. ``jaxdream warmup`` lowers the same call, so the programs it compiles
    are the ones :func:`ascend` loads.
    """
    if in_jit_loop is None:
        in_jit_loop = in_jit_loop_default()
    kwargs = {"obj": obj, "sched": sched} | ({} if mask is None else {"mask": jnp.asarray(mask, jnp.float32)})
    one = kwargs | {"sched": replace(sched, steps=1)}  # the programs do not depend on the step count
    if in_jit_loop:
        return _ascend_in_jit, (params, image, key, jax.device_put(np.int32(sched.steps)), weights, step_size,
                                guides), one
    return ascent_step, (params, image, key, jax.device_put(np.int32(0)), weights, step_size, guides), one


# ----------------------------------------------------------------------------------------------
# settings parsing and the octave driver


def parse_layers(text: str | Sequence) -> tuple[tuple[str, float], ...]:
    """``"inception_4c/output:1,inception_4d/output:0.5"`` -> ((name, weight), ...)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append((str(item[0]), float(item[1])))
            continue
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.rpartition(":")
        if not sep or not _is_number(weight):
            name, weight = item, "1"
        out.append((name, float(weight)))
    if not out:
        raise SettingsError("no layers given")
    return tuple(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_channels(text: str | Sequence[int] | int | None) -> tuple[int, ...] | None:
    """``"139"`` or ``"10,20,30"`` or ``"10-19"`` -> a tuple of channel indices (None: all)."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return (options.get("channel").check(text, "channel"),)
    if not isinstance(text, str):
        return tuple(options.get("channel").check_all(list(text), "channel"))
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            lo, hi = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise SettingsError(f"--channels expects numbers like 139 or 10,20 or 10-19, got '{text}'") from None
        if hi < lo:
            raise SettingsError(f"--channels: the range {part.strip()} is empty (write the lower end first)")
        options.get("channel").check_all((lo, hi), "channel")
        out.extend(range(lo, hi + 1))
    if not out:
        raise SettingsError(f"--channels: no channel given in '{text}'")
    return tuple(out)


@dataclass
class DreamProgress:
    """What the driver reports after each octave (or zoom frame)."""

    octave: int
    octaves: int
    shape: tuple[int, int]
    seconds: float


@dataclass
class StepProgress:
    """What :meth:`Dreamer.run` reports after every ascent step (``on_step``)."""

    octave: int
    octaves: int
    step: int
    steps: int
    shape: tuple[int, int]
    image: jax.Array


@dataclass(frozen=True)
class DreamConfig:
    """Every DeepDream setting, validated; ``to_dict`` goes into the output's metadata."""

    model: str = options.default("model")
    layers: tuple[tuple[str, float], ...] = (("inception_4c/output", 1.0),)
    channels: tuple[int, ...] | None = None
    class_index: int | None = None
    guide: str | None = None
    guide_size: int = options.default("guide-size")
    steps: int = options.default("steps")
    octaves: int = options.default("octaves")
    octave_scale: float = options.default("octave-scale")
    step_size: float = options.default("step-size")
    jitter: int = options.default("jitter")
    normalize: str = "mean"
    lapnorm_levels: int = 4
    tile_size: int = options.default("tile-size")
    tile_batch: int = 4
    pooling: str = "max"
    seed: int = options.default("seed")
    precision: str = options.default("precision")
    mask: str | None = None  # the mask's file, for the record (the Dreamer gets its pixels)
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        d["layers"] = [f"{n}:{w:g}" for n, w in self.layers]
        if d["mask"] is None:  # absent rather than null: older runs' records stay comparable
            del d["mask"]
        return d | self.extra


_DEFAULT = DreamConfig()


@dataclass(frozen=True)
class Schedule:
    """How one octave's ascent runs (static): a :class:`DreamConfig`'s schedule fields.

    Attributes:
        steps: ascent steps.
        jitter: random shift of up to this many pixels per step.
        normalize: ``mean`` (step / mean|g|), ``std`` (step / std g) or ``lapnorm``
            (Laplacian pyramid normalisation of the TF DeepDream tutorial).
        lapnorm_levels: pyramid levels for ``lapnorm``.
        tile_size: gradients of larger images are computed in tiles of at most this size.
        tile_batch: tiles evaluated together (bounds memory for very large images).
        mesh: split each batch of tiles across these devices (None: one device).
    """

    steps: int = _DEFAULT.steps
    jitter: int = _DEFAULT.jitter
    normalize: str = _DEFAULT.normalize
    lapnorm_levels: int = _DEFAULT.lapnorm_levels
    tile_size: int = _DEFAULT.tile_size
    tile_batch: int = _DEFAULT.tile_batch
    mesh: Any = None  # a jax.sharding.Mesh: each batch of tiles is split across its devices


def make_config(**settings) -> DreamConfig:
    """Build and validate a :class:`DreamConfig` from keyword settings (strings allowed).

    ``normalize`` absent or ``"auto"``: ``lapnorm`` (:data:`CLASS_NORMALIZE`) for a class dream,
    ``mean`` otherwise; the config records what was chosen.

    Raises:
        SettingsError / LayerError: with one line naming the bad value.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    if settings.get("normalize", "auto") == "auto":
        settings["normalize"], levels = (CLASS_NORMALIZE if settings.get("class_index") is not None
                                          else ("mean", DreamConfig.lapnorm_levels))
        settings.setdefault("lapnorm_levels", levels)
    cfg = DreamConfig(**settings)
    spec = get_spec(cfg.model)
    layers = parse_layers(cfg.layers)
    channels = parse_channels(cfg.channels)
    cls = None if cfg.class_index is None else class_index(cfg.class_index)
    if cls is not None:
        if CLASS_LAYER not in spec.layers:
            raise SettingsError(f"class dreams need a classifier; {spec.name} has none (use googlenet)")
        layers = ((CLASS_LAYER, 1.0),)
        if cfg.guide is not None:
            raise SettingsError("choose either --class or --guide, not both")
    spec.check_layers([n for n, _ in layers])
    for name in ("steps", "octaves", "octave_scale", "step_size", "jitter", "lapnorm_levels", "tile_size",
                 "tile_batch", "guide_size", "seed"):
        options.get(name).check(getattr(cfg, name))
    if cfg.normalize not in NORMALIZATIONS:
        raise SettingsError(f"unknown gradient normalisation '{cfg.normalize}'; use one of "
                            f"{', '.join(NORMALIZATIONS)}")
    precision.check(cfg.precision)
    if cfg.pooling not in spec.poolings:
        raise SettingsError(f"{spec.name} supports pooling {', '.join(spec.poolings)}, not '{cfg.pooling}'")
    options.get("layer_weight").check_all([w for _, w in layers], "layer weight")
    if channels is not None and cls is None:
        for name, _ in layers:
            n_channels = _channel_count(spec.name, name)
            bad = [c for c in channels if not 0 <= c < n_channels]
            if bad:
                raise SettingsError(f"channel {bad[0]} is out of range for {name} "
                                    f"({n_channels} channels: 0..{n_channels - 1})")
    return replace(cfg, model=spec.name, layers=layers, channels=channels, class_index=cls)


def objective_layers(cfg: DreamConfig) -> tuple[str, ...]:
    """The layers a dream's objective reads: ``cfg.layers``, or for a class dream the layer
    under the classifier (:data:`CLASS_FEATURES`), which sets the smallest octave."""
    return (CLASS_FEATURES,) if cfg.class_index is not None else tuple(n for n, _ in cfg.layers)


@functools.lru_cache(maxsize=None)
def _channel_count(model: str, layer: str) -> int:
    spec = get_spec(model)
    size = max(spec.min_size([layer]), 1)
    module = spec.make((layer,), spec.poolings[0])
    out = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0),
                                                         jnp.zeros((1, size, size, 3)))[0])
    return int(out[layer].shape[-1])


def octave_shapes(height: int, width: int, octaves: int, scale: float, min_size: int) -> list[tuple[int, int]]:
    """Image shapes from the smallest octave to the full size; octaves below ``min_size`` dropped."""
    shapes = []
    for i in range(octaves):
        h, w = round(height / scale ** i), round(width / scale ** i)
        if min(h, w) < min_size:
            break
        shapes.append((h, w))
    return shapes[::-1]


def guide_features(net: Network, guide_image: np.ndarray, cfg: DreamConfig) -> tuple:
    """Per-layer guide features (M, C) of a guide image (google/deepdream's objective_guide)."""
    img = guide_image
    if cfg.guide_size:
        img = media.resize(img, media.fit_size(*img.shape[:2], cfg.guide_size))
    names = tuple(n for n, _ in cfg.layers)
    net.spec.check_size(img.shape[0], img.shape[1], names)
    feats = _features_jit(net.params, jnp.asarray(img)[None], model=net.spec.name,
                          pooling=cfg.pooling, layers=names)
    return tuple(feats[n].reshape(-1, feats[n].shape[-1]) for n in names)


class Dreamer:
    """A loaded network plus validated settings; ``run`` dreams images, ``step`` one frame.

    Keeping the network and guide features here lets the zoom and video drivers call the same
    compiled ascent frame after frame.
    """

    def __init__(self, cfg: DreamConfig, network: Network | None = None, weights=None,
                 guide_image: np.ndarray | None = None, mesh=None, mask=None):
        self.cfg = cfg
        self.set_mask(mask)
        self.mesh = mesh if mesh is not None and mesh.size > 1 else None
        self.net = network or load_network(cfg.model, weights, cfg.pooling)
        self.layer_names = objective_layers(cfg)
        self.min_size = self.net.spec.min_size(self.layer_names)
        kind = "class" if cfg.class_index is not None else ("guide" if guide_image is not None else "l2")
        self.obj = Objective(cfg.model, self.layer_names, cfg.channels, kind, cfg.class_index, cfg.pooling,
                             cfg.precision)
        self.weights = jax.device_put(np.asarray([w for _, w in cfg.layers], np.float32))
        self.step_size = jax.device_put(np.float32(cfg.step_size))
        self.guides = guide_features(self.net, guide_image, cfg) if guide_image is not None else None
        self.key = jax.random.key(cfg.seed)
        self.compile_seconds = 0.0  # spent compiling ahead (:meth:`compile`), all runs together

    def set_mask(self, mask) -> None:
        """Dream only where ``mask`` is white from now on: (H, W) weights in 0..1, a path or an
        array, resized to every image it is applied to (octaves, zoom and video frames); None:
        everywhere."""
        self.mask = None if mask is None else load_mask(mask, "mask")
        self._masks: dict = {}

    def schedule(self, steps: int | None = None) -> Schedule:
        c = self.cfg
        return Schedule(steps or c.steps, c.jitter, c.normalize, c.lapnorm_levels, c.tile_size, c.tile_batch,
                        self.mesh)

    def step(self, image, key, steps: int | None = None, layers: tuple[tuple[str, float], ...] | None = None,
             on_step: Callable[[int, jax.Array], None] | None = None):
        """Run ``steps`` ascent steps on one image shape (jitted; compiled once per shape);
        ``on_step(i, image)`` after each."""
        args, kwargs = self._ascent_arguments(jnp.asarray(image, jnp.float32), key, steps, layers)
        return ascend(*args, **kwargs, on_step=on_step)

    def objective(self, image) -> float:
        """The objective's value for an (H, W, 3) RGB 0..255 image, computed whole (untiled)."""
        return float(_objective_jit(self.net.params, jnp.asarray(image, jnp.float32)[None], self.weights,
                                    self.guides, obj=self.obj))

    def octave_shapes(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) of every octave of an image of size ``hw``, smallest first."""
        return octave_shapes(hw[0], hw[1], self.cfg.octaves, self.cfg.octave_scale, self.min_size)

    def program(self, image, key, layers=None, in_jit_loop: bool | None = None):
        """``(jitted function, args, kwargs)`` of the first call :meth:`step` makes on ``image``
        (an array or a ``jax.ShapeDtypeStruct``): lower it to compile ahead."""
        args, kwargs = self._ascent_arguments(image, key, None, layers)
        return ascent_program(*args, **kwargs, in_jit_loop=in_jit_loop)

    def compile(self, shapes, layers=None, per_step: bool = False, starts: bool = True) -> float:
        """Compile the programs :meth:`run` will run on octaves of these (h, w) ``shapes`` (the
        ascent of each shape, the start image of each octave), all at once (XLA compiles
        outside the GIL; :func:`jaxdream.runtime.cache.compile_ahead`), before any of them runs;
        each is compiled once in a process (later calls find it compiled, or in the persistent
        cache). ``per_step``:
        the one-step program of a run that reports every step; ``starts``: the octaves' start
        images too (a zoom's or video's later frames only step). Returns the seconds spent
        (also added to :attr:`compile_seconds`)."""
        shapes = [tuple(int(v) for v in s) for s in shapes]
        image = lambda hw: jax.ShapeDtypeStruct((*hw, 3), jnp.float32)  # noqa: E731
        programs = {}
        for shape in shapes:
            self.mask_at(shape)  # resized and placed here, not inside the loops
            fn, args, kwargs = self.program(image(shape), self.key, layers, False if per_step else None)
            programs.setdefault(("ascent", shape), (fn, args, kwargs))
        starts_too = starts
        starts = [(image(shapes[0]),)] + [(image(b), image(a), image(a)) for a, b in zip(shapes, shapes[1:])]
        for args in starts if starts_too else ():  # the octaves' start images (run)
            programs.setdefault(("start", tuple(a.shape for a in args)), (_octave_start, args, {}))
        seconds = compile_ahead(programs.values())
        self.compile_seconds += seconds
        return seconds

    def _ascent_arguments(self, image, key, steps, layers) -> tuple[tuple, dict]:
        obj, weights = self.obj, self.weights
        if layers is not None:
            obj = replace(obj, layers=tuple(n for n, _ in layers))
            weights = jax.device_put(np.asarray([w for _, w in layers], np.float32))
        return ((self.net.params, image, key, weights, self.step_size, self.guides),
                {"obj": obj, "sched": self.schedule(steps), "mask": self.mask_at(image.shape[:2])})

    def mask_at(self, hw: tuple[int, int]) -> jax.Array | None:
        """The mask resized to an image of size ``hw`` (kept per size), or None."""
        if self.mask is None:
            return None
        hw = tuple(hw)
        if hw not in self._masks:
            self._masks[hw] = jax.device_put(np.asarray(resize_mask(self.mask, hw), np.float32))
        return self._masks[hw]

    def run(self, image: np.ndarray, progress: Callable[[DreamProgress], None] | None = None,
            layers: tuple[tuple[str, float], ...] | None = None,
            on_step: Callable[[StepProgress], None] | None = None) -> np.ndarray:
        """Dream an (H, W, 3) RGB 0..255 image through the octaves; returns float32 RGB.

        ``layers`` overrides the configured (layer, weight) pairs (same compiled program per set).
        ``progress`` is called after every octave, ``on_step`` after every ascent step (with the
        image so far: a preview, or what to keep when the run is stopped).
        """
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        self.net.spec.check_size(h, w, self.layer_names)
        shapes = self.octave_shapes((h, w))
        self.compile(shapes, layers, per_step=on_step is not None)
        # the octave images go to the device once; the detail carried between octaves, the
        # start images and the steps stay there; only the result comes back
        bases = [jax.device_put(image if s == (h, w) else media.resize(image, s, "bilinear")) for s in shapes]
        keys = [jax.random.fold_in(self.key, jax.device_put(np.uint32(octave))) for octave in range(len(shapes))]
        result = None
        for octave, base in enumerate(bases):
            start = time.perf_counter()
            hook = None if on_step is None else (
                lambda i, x, octave=octave, shape=base.shape[:2]: on_step(
                    StepProgress(octave + 1, len(bases), i + 1, self.cfg.steps, shape, x)))
            start_image = _octave_start(base) if octave == 0 else _octave_start(base, result, bases[octave - 1])
            result = (self.step(start_image, keys[octave], layers=layers) if hook is None else
                      self.step(start_image, keys[octave], layers=layers, on_step=hook))
            if progress is not None:
                jax.block_until_ready(result)  # the octave's seconds, not its dispatch's
                progress(DreamProgress(octave + 1, len(bases), base.shape[:2], time.perf_counter() - start))
        return np.asarray(jax.device_get(result))


@jax.jit
def _octave_start(base: jax.Array, previous: jax.Array | None = None, previous_base: jax.Array | None = None):
    """An octave's start image: the detail the previous octave dreamed (its result less its
    base; none before the first octave) resized to this base, added and clipped to 0..255."""
    if previous is None:
        return jnp.clip(base, 0.0, 255.0)
    detail = previous - previous_base
    if detail.shape != base.shape:
        detail = jax.image.resize(detail, base.shape, "linear")
    return jnp.clip(base + detail, 0.0, 255.0)


def dream(image: np.ndarray, *, weights=None, guide: np.ndarray | None = None, mask=None,
          progress: Callable[[DreamProgress], None] | None = None, **settings) -> np.ndarray:
    """DeepDream an image.

    Args:
        image: (H, W, 3) RGB, uint8 or float 0..255.
        weights: explicit weights file (default: the store).
        guide: a guide image (H, W, 3) for guided dreaming.
        mask: dream only where this mask is white (a path or an (H, W) array in 0..1 of the
            image's aspect ratio; grey levels scale the step): an all-black mask leaves the
            image unchanged.
        progress: called after each octave with a :class:`DreamProgress`.
        **settings: any :class:`DreamConfig` field: ``layers`` ("name:weight,..."), ``channels``,
            ``class_index``, ``steps``, ``octaves``, ``octave_scale``, ``step_size``, ``jitter``,
            ``normalize``, ``lapnorm_levels``, ``tile_size``, ``seed``, ``model``, ...

    Returns:
        The dreamed image, float32 RGB 0..255, same shape as ``image``.

    Example:
        >>> out = jaxdream.dream(img, layers="inception_4c/output", octaves=4)  # doctest: +SKIP
    """
    cfg = make_config(**settings)
    image = np.asarray(image, np.float32)
    if mask is not None:
        mask = load_mask(mask, "mask")
        check_aspect(mask, image.shape[:2], "mask", "the image")
    return Dreamer(cfg, weights=weights, guide_image=guide, mask=mask).run(image, progress)
