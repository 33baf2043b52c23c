"""Devices, the device mesh and where arrays live: the one module of jaxdream that owns devices.

Drivers say which axis of which array is a batch (tiles, sweep settings, content images, frame
pairs) or an image axis (height bands of one big picture); this module builds the 1-D
:class:`jax.sharding.Mesh` over the devices of every process and places the arrays on it. The
computation itself is ordinary ``jit``-ed JAX: XLA's SPMD partitioner splits it and inserts the
collectives (a Gram matrix computed over height shards, for instance, becomes per-device partial
sums and one all-reduce).

Several hosts form one mesh through :func:`initialize_distributed` (``jax.distributed``); every
process then sees every device, and only the process for which :func:`is_writer` is true writes
outputs.

Example:
    >>> from jaxdream.runtime import parallel
    >>> m = parallel.mesh()                        # every device  # doctest: +SKIP
    >>> xs, n = parallel.pad_batch(images, m.size)  # doctest: +SKIP
    >>> xs = parallel.shard_batch(xs, m)           # axis 0 split over devices  # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..errors import SettingsError

__all__ = ["devices", "mesh", "pad_batch", "shard_batch", "replicate", "height_padding",
           "pad_height", "shard_height", "axis_sharding", "describe", "cluster_detected",
           "initialize_distributed", "is_writer", "CLUSTER_ENV"]

#: Mesh axis name used throughout jaxdream.
AXIS = "d"

#: Environment variables that can mean a cluster launcher started this process; see
#: :func:`cluster_detected` for when they count. Only then does :func:`initialize_distributed`
#: without arguments call ``jax.distributed.initialize()`` and let JAX's own cluster detection
#: fill in the rest.
CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS",
               "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")

Tree = Any


# ------------------------------------------------------------------------------------------
# devices and the mesh
# ------------------------------------------------------------------------------------------


def devices(n: int | None = None) -> list[jax.Device]:
    """The first ``n`` devices of every process (all of them by default).

    Args:
        n: how many devices to use, 1 to the number available; None for all.

    Returns:
        ``jax.devices()[:n]`` (the default backend's devices, of all processes).

    Raises:
        SettingsError: ``n`` is not between 1 and the number of devices.
    """
    available = jax.devices()
    if n is None:
        return list(available)
    if int(n) != n or n < 1:
        raise SettingsError(f"--devices {n}: must be a whole number of at least 1")
    if n > len(available):
        kind = available[0].platform
        plural = "device" if len(available) == 1 else "devices"
        raise SettingsError(f"--devices {n}: only {len(available)} {plural} ({kind}) "
                            f"{'is' if len(available) == 1 else 'are'} available")
    return list(available[:n])


def mesh(n: int | None = None, axis: str = AXIS) -> Mesh:
    """A 1-D mesh over :func:`devices` ``(n)``.

    Args:
        n: number of devices (default all).
        axis: the mesh axis name (``"d"``).

    Returns:
        ``Mesh(devices, (axis,))``.
    """
    return Mesh(np.asarray(devices(n), dtype=object), (axis,))


def axis_sharding(m: Mesh, ndim: int, axis: int | None) -> NamedSharding:
    """A sharding that splits array axis ``axis`` over the mesh and replicates the rest.

    Args:
        m: a 1-D mesh.
        ndim: the array's number of dimensions.
        axis: the array axis to split (negative counts from the end); None replicates.

    Returns:
        ``NamedSharding(m, P(None, ..., mesh axis, ..., None))``.
    """
    spec = [None] * ndim
    if axis is not None:
        spec[axis] = m.axis_names[0]
    return NamedSharding(m, P(*spec))


def _place(x, sharding: NamedSharding) -> jax.Array:
    """Put ``x`` (the full global value, the same in every process) under ``sharding``."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# ------------------------------------------------------------------------------------------
# batch axes
# ------------------------------------------------------------------------------------------


def _leading(tree: Tree) -> int:
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise SettingsError(f"batch: arrays disagree on the batch length ({sorted(sizes)})")
    return sizes.pop()


def pad_batch(x: Tree, n: int) -> tuple[Tree, int]:
    """Pad axis 0 to a multiple of ``n`` by repeating the last element.

    Args:
        x: an array, or a pytree of arrays with the same leading length.
        n: the multiple (usually the device count).

    Returns:
        (padded, original length): slice results back with ``[:original]``.
    """
    length = _leading(x)
    extra = -length % n

    def pad(a):
        if extra == 0:
            return a
        xp = jnp if isinstance(a, jax.Array) else np
        return xp.concatenate([a, xp.repeat(a[-1:], extra, axis=0)], axis=0)
    return jax.tree.map(pad, x), length


def shard_batch(x: Tree, m: Mesh) -> Tree:
    """Split axis 0 of ``x`` (an array or a pytree of arrays) across the mesh.

    Args:
        x: the full batch, the same in every process; its length must divide by the device
            count (see :func:`pad_batch`).
        m: a 1-D mesh.

    Returns:
        The same pytree of global arrays, each sharded along axis 0.

    Raises:
        SettingsError: the batch length does not divide by the device count.
    """
    length = _leading(x)
    if length % m.size:
        raise SettingsError(f"a batch of {length} does not split over {m.size} devices; "
                            f"pad it first (parallel.pad_batch)")
    return jax.tree.map(lambda a: _place(a, axis_sharding(m, np.ndim(a), 0)), x)


def replicate(tree: Tree, m: Mesh) -> Tree:
    """A full copy of every leaf of ``tree`` on every device of the mesh.

    Args:
        tree: arrays (parameters, targets, weights), the same in every process.
        m: the mesh.

    Returns:
        The pytree with each leaf a replicated global array.
    """
    return jax.tree.map(lambda a: _place(a, NamedSharding(m, P())), tree)


def place(tree: Tree, axes: Tree, m: Mesh) -> Tree:
    """Place each leaf of ``tree`` with its own split axis (``axes``: a matching pytree of ints,
    or None to replicate that leaf), e.g. an optimiser state whose history has the batch on
    axis 1."""
    return jax.tree.map(lambda a, ax: _place(a, axis_sharding(m, np.ndim(a), ax)), tree, axes,
                        is_leaf=lambda v: v is None)


def to_host(x) -> np.ndarray:
    """The whole value of a (possibly sharded, possibly multi-process) array as a NumPy array,
    in every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


# ------------------------------------------------------------------------------------------
# image axes
# ------------------------------------------------------------------------------------------


def height_padding(height: int, m: Mesh | int) -> int:
    """Rows to add so that ``height`` splits evenly over the mesh (0: it already does).

    Args:
        height: the image height.
        m: a mesh or a device count.

    Returns:
        The number of rows :func:`shard_height` needs (with ``pad=True``) or refuses (without).
    """
    n = m.size if isinstance(m, Mesh) else int(m)
    return -int(height) % n


def pad_height(x: jax.Array, m: Mesh | int, axis: int = 1) -> jax.Array:
    """Pad ``axis`` of ``x`` to a multiple of the device count by repeating its last row.

    Note that the padded rows then take part in any computation over the image: crop the
    result back (``[:, :height]``), and do not expect sums over the image to be unchanged.

    Args:
        x: an image or a batch of images.
        m: a mesh or a device count.
        axis: the height axis (1 for NHWC batches, 0 for one HWC image).

    Returns:
        ``x`` with :func:`height_padding` extra rows along ``axis``.
    """
    extra = height_padding(x.shape[axis], m)
    if extra == 0:
        return x
    xp = jnp if isinstance(x, jax.Array) else np
    last = xp.take(x, xp.asarray([x.shape[axis] - 1]), axis=axis)
    return xp.concatenate([x, xp.repeat(last, extra, axis=axis)], axis=axis)


def shard_height(x: jax.Array, m: Mesh, axis: int = 1, pad: bool = False) -> jax.Array:
    """Split an image's height axis across the mesh (bands of rows, one per device).

    For an NHWC batch (``axis=1``) this is ``NamedSharding(m, P(None, "d", None, None))``.
    XLA's SPMD partitioner then runs convolutions on the bands, exchanging the halo rows
    between neighbours, and all-reduces sums over the image (Gram matrices).

    Args:
        x: an image (``axis=0``) or a batch of images (``axis=1``).
        m: a 1-D mesh.
        axis: the height axis.
        pad: allow padding the height by repeating the last row (see :func:`pad_height`);
            otherwise the height must divide by the device count.

    Returns:
        The sharded global array.

    Raises:
        SettingsError: the height does not divide by the device count and ``pad`` is False.
    """
    extra = height_padding(x.shape[axis], m)
    if extra and not pad:
        raise SettingsError(f"an image {x.shape[axis]} px high does not split over {m.size} "
                            f"devices; {extra} more rows would make it")
    if extra:
        x = pad_height(x, m, axis)
    return _place(x, axis_sharding(m, np.ndim(x), axis))


# ------------------------------------------------------------------------------------------
# description, several processes
# ------------------------------------------------------------------------------------------


def describe(m: Mesh | None = None) -> str:
    """A few lines for ``jaxdream devices``: backend, processes, each device of the mesh.

    Args:
        m: the mesh (default: all devices).

    Returns:
        Text without a trailing newline.
    """
    m = mesh() if m is None else m
    devs = list(m.devices.flat)
    lines = [f"backend: {jax.default_backend()} (jax {jax.__version__})",
             f"processes: {jax.process_count()} (this is process {jax.process_index()})",
             f"mesh: {m.size} device{'s' if m.size != 1 else ''} on axis "
             f"'{m.axis_names[0]}'"]
    for d in devs:
        mine = "" if d.process_index == jax.process_index() else " (remote)"
        lines.append(f"  {d.id}: {d.platform} {d.device_kind} process {d.process_index}{mine}")
    return "\n".join(lines)


def _count(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def cluster_detected(env: dict | None = None) -> bool:
    """Whether the environment says that a launcher started several processes of one job.

    Conservative: an explicit ``JAX_COORDINATOR_ADDRESS``; a SLURM job step of more than one
    task (``srun``: ``SLURM_PROCID`` set and ``SLURM_NTASKS`` > 1, not merely being inside an
    allocation); Open MPI with more than one rank; Cloud TPU multi-host variables.

    Args:
        env: the environment (default ``os.environ``).
    """
    env = os.environ if env is None else env
    return bool(env.get("JAX_COORDINATOR_ADDRESS")
                or (env.get("SLURM_JOB_ID") and env.get("SLURM_PROCID") is not None
                    and _count(env.get("SLURM_NTASKS")) > 1)
                or _count(env.get("OMPI_COMM_WORLD_SIZE")) > 1
                or env.get("TPU_WORKER_HOSTNAMES") or env.get("MEGASCALE_COORDINATOR_ADDRESS"))


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Poll until something accepts TCP connections at ``host:port``, or raise SettingsError.

    XLA's coordination client does not raise when it cannot reach the coordinator: it
    terminates the process. Checking first turns the common mistake (wrong address, process 0
    not started) into an error message.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f"coordinator '{address}': expected host:port")
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(2.0, left))):
                return
        except OSError as e:
            if left <= 0:
                raise SettingsError(f"no JAX coordinator answered at {address} within {timeout_s:g} s "
                                    f"({e.strerror or e}); start process 0 first") from None
            time.sleep(min(0.2, max(left, 0)))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: float | None = None) -> bool:
    """Join this process to a multi-process JAX cluster (``jax.distributed.initialize``).

    With explicit arguments, initialise with them. Without, initialise only when
    :func:`cluster_detected` finds a launcher's environment and leave the details to JAX's
    cluster detection; otherwise do nothing (one process). Call before anything else
    touches JAX's devices.

    Failures become :class:`SettingsError`, with one exception XLA does not let us catch: when
    process 0's coordinator is up but not every process registers in time, XLA's coordination
    service aborts the waiting processes (a C++ stack, exit 134). A watchdog ends the process
    first, after ``timeout_s``, with one line and exit status 1. A process other than 0 first
    waits up to ``timeout_s`` for the coordinator to accept connections, so a wrong address or
    a missing process 0 is an error.

    Args:
        coordinator: ``host:port`` of process 0's coordinator service.
        num_processes: the number of processes.
        process_id: this process's rank, 0 to ``num_processes - 1``.
        timeout_s: seconds to wait for every process to connect (default:
            ``JAXDREAM_CLUSTER_TIMEOUT_S`` or 60); past it the process ends in one line.

    Returns:
        True if this process is (now) part of a cluster, False for a single process.

    Raises:
        SettingsError: inconsistent arguments, or the cluster could not be formed (one line).
    """
    explicit = (coordinator, num_processes, process_id)
    if jax.distributed.is_initialized():
        return True
    if all(v is None for v in explicit) and not cluster_detected():
        return False
    if timeout_s is None:
        timeout_s = cluster_timeout()
    if num_processes is not None and num_processes < 1:
        raise SettingsError(f"--num-processes {num_processes}: must be at least 1")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise SettingsError(f"--process-id {process_id}: must be 0..{num_processes - 1}")
    if coordinator is not None:
        _check_host_port(coordinator)
    if coordinator is not None and process_id not in (None, 0):
        _wait_for_coordinator(coordinator, timeout_s)
    where = coordinator or "the detected cluster"
    # XLA aborts a process whose cluster does not form in time (a C++ stack, exit 134): this
    # one ends first, in one line
    watchdog = threading.Timer(timeout_s, _cluster_not_formed, (where, num_processes, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=int(timeout_s) + 30)
    except Exception as e:  # noqa: BLE001 -- jax raises RuntimeError, ValueError, XlaRuntimeError
        detail = " ".join(str(e).split())[:300]
        raise SettingsError(f"could not join the JAX cluster at {where}: {detail}") from None
    finally:
        watchdog.cancel()
    return True


def _cluster_not_formed(where: str, num_processes: int | None, timeout_s: float) -> None:
    """End the process in one line: the cluster did not form within ``timeout_s``."""
    many = f"all {num_processes} processes" if num_processes else "every process"
    sys.stderr.write(f"jaxdream: error: the JAX cluster at {where} did not form within {timeout_s:g} s (not "
                     f"{many} joined); start every process with the same --coordinator and --num-processes "
                     f"and its own --process-id (JAXDREAM_CLUSTER_TIMEOUT_S sets the wait)\n")
    sys.stderr.flush()
    os._exit(1)


def cluster_timeout() -> float:
    """Seconds a process waits for its cluster: ``JAXDREAM_CLUSTER_TIMEOUT_S``, default 60."""
    text = os.environ.get("JAXDREAM_CLUSTER_TIMEOUT_S", "60")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:
        raise SettingsError(f"JAXDREAM_CLUSTER_TIMEOUT_S={text}: expected seconds, 0 < S <= 86400")
    return value


def _check_host_port(text: str) -> None:
    """``--coordinator`` must be ``HOST:PORT`` (JAX's own parser fails with an IndexError)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"--coordinator {text}: expected HOST:PORT with a port 1..65535, "
                            f"e.g. 10.0.0.1:1234")


def is_writer() -> bool:
    """Whether this process writes outputs (process 0 of the cluster, or the only one)."""
    return jax.process_index() == 0
