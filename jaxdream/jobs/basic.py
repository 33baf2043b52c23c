"""Commands that inspect the installation: devices, weights, layers, classify."""

from __future__ import annotations

from jaxdream.errors import SettingsError

from .common import add, add_device_flags


def register(sub) -> None:
    p = sub.add_parser("devices", help="show the devices and the mesh a run will compute on")
    add_device_flags(p, "devices")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("weights", help="list, download, convert or verify pretrained weights")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    w = wsub.add_parser("list", help="known weights and whether they are present")
    w.set_defaults(func=cmd_weights_list)
    w = wsub.add_parser("download", help="download weights into the cache and convert them")
    w.add_argument("key", nargs="+", help="googlenet, vgg19 or all")
    add(w, "weights", "url")
    w.set_defaults(func=cmd_weights_download)
    w = wsub.add_parser("convert", help="convert an upstream weights file into the cache")
    w.add_argument("key", help="googlenet or vgg19")
    w.add_argument("file", nargs="?", help="the upstream file (default: search the weights folders)")
    w.set_defaults(func=cmd_weights_convert)
    w = wsub.add_parser("verify", help="check hashes and that the weights load into the model")
    w.add_argument("key", nargs="*", help="googlenet, vgg19 (default: all present)")
    w.set_defaults(func=cmd_weights_verify)

    p = sub.add_parser("layers", help="list a model's layers with their output shapes")
    p.add_argument("model", help="googlenet or vgg19")
    add(p, "layers", "size")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("classify", help="print the top ImageNet classes GoogLeNet sees in an image")
    p.add_argument("image")
    add(p, "classify", "model", "top", "weights")
    p.set_defaults(func=cmd_classify)


def cmd_devices(args) -> int:
    from jaxdream.runtime import parallel
    print(parallel.describe(args.mesh))
    return 0


def _keys(keys) -> list[str]:
    from jaxdream.weights import REGISTRY, get_info
    if not keys or keys == ["all"]:
        return list(REGISTRY)
    return [get_info(k).key for k in keys]


def cmd_weights_list(args) -> int:
    from jaxdream.weights import REGISTRY, store
    print(f"cache: {store.weights_cache()}")
    for info in REGISTRY.values():
        original = store.find_original(info)
        converted = store.converted_path(info)
        print(f"{info.key:10s} model={info.model} format={info.format}")
        print(f"  converted: {converted if converted.is_file() else 'no'}")
        print(f"  original:  {original or 'not found'}")
        print(f"  url:       {info.url}")
        print(f"  {info.hash_name}:      {info.hash}".replace(f"{info.hash_name}:      ",
                                                              f"{info.hash_name + ':':11s}"))
        print(f"  licence:   {info.licence}")
    return 0


def _convert(key: str, path=None) -> None:
    from pathlib import Path

    from jaxdream.nets.network import param_shapes
    from jaxdream.weights import get_info, store
    info = get_info(key)
    if path is None:
        path = store.find_original(info)
        if path is None:
            raise SettingsError(f"no {info.filename} found in {', '.join(map(str, store.search_dirs()))}; "
                                f"run `jaxdream weights download {info.key}` or name the file")
    path = Path(path)
    if store.sniff_format(path) != info.format:
        raise SettingsError(f"{path} is not a {info.format} weights file for {info.model}")
    _, provenance = store.convert_and_cache(info, path, param_shapes(info.model), must_cache=True)
    print(f"{info.key}: converted {path} -> {store.converted_path(info)}")


def cmd_weights_download(args) -> int:
    from jaxdream.progress import download_bar
    from jaxdream.weights import get_info, store
    keys = _keys(args.key)
    if args.url and len(keys) > 1:
        raise SettingsError("--url names one file: give one weights key with it")
    for key in keys:
        info = get_info(key)
        path = store.download(info, url=args.url, progress=download_bar)
        print(f"{key}: downloaded {path}")
        _convert(key, path)
    return 0


def cmd_weights_convert(args) -> int:
    _convert(args.key, args.file)
    return 0


def cmd_weights_verify(args) -> int:
    from jaxdream.nets.network import param_shapes
    from jaxdream.weights import get_info, store
    failures = 0
    for key in _keys(args.key):
        info = get_info(key)
        original = store.find_original(info)
        if original is not None:
            ok = store.file_hash(original, info.hash_name) == info.hash
            print(f"{key}: {original}: {info.hash_name} "
                  f"{'matches the published hash' if ok else 'differs from the published hash (local copy)'}")
        cached = store.converted_path(info)
        if cached.is_file():
            from jaxdream.weights.convert import validate
            validate(store.load_npz(cached), param_shapes(info.model), str(cached))
            print(f"{key}: {cached}: loads and fits {info.model}")
        if original is None and not cached.is_file():
            print(f"{key}: not present (run `jaxdream weights download {key}`)")
            failures += bool(args.key)
    return 1 if failures else 0


def cmd_layers(args) -> int:
    import jax
    import jax.numpy as jnp

    from jaxdream.nets import get_spec
    spec = get_spec(args.model)
    names = [n for n in spec.layers if spec.output_size(args.size, n) >= 1]
    if not names:
        raise SettingsError(f"--size {args.size} is too small for {spec.name}")
    module = spec.make(tuple(names), spec.poolings[0])
    x = jnp.zeros((1, args.size, args.size, 3))
    out = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x)[0])
    print(f"{spec.name} at {args.size}x{args.size}:")
    print(f"{'layer':36s} {'height x width':>15s} {'channels':>9s}")
    for name in names:
        _, h, w, c = out[name].shape
        print(f"{name:36s} {f'{h} x {w}':>15s} {c:>9d}")
    skipped = [n for n in spec.layers if n not in names]
    if skipped:
        print(f"{len(skipped)} deeper layers need a larger input (minimum size in px):")
        for name in skipped:
            print(f"{name:36s} {spec.min_size([name]):>15d}")
    return 0


def cmd_classify(args) -> int:
    import numpy as np

    import jaxdream
    from jaxdream import media
    from jaxdream.nets.classes import class_names
    prob = jaxdream.classify(media.load_image(args.image), model=args.model, weights=args.weights)
    names = class_names()
    for rank, idx in enumerate(np.argsort(-prob)[: args.top], start=1):
        print(f"{rank}. {idx:4d} {names[idx]:40s} {prob[idx]:.4f}")
    return 0
