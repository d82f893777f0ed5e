"""Device placement: the one place that decides where networks train.

:func:`detect` lists TPUs, GPUs and CPUs without starting TensorFlow's runtime (so memory
growth and logical devices can still be set); :func:`plan` is a pure decision on such a
list; :func:`configure` applies it; :func:`strategy`, :func:`trial_device` and
:func:`trial_context` give the rest of the code a scope to train a trial in.

``python -m automl.device_bench [--size N] [--power P]`` lists the devices and runs the
CPU-vs-GPU experiment. TensorFlow is imported inside functions only: importing this
module is cheap.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["free_cores", "usable_cores", "memory_bytes", "default_workers", "WORKER_MEMORY_BYTES", "Device",
           "Placement", "STRATEGIES", "DISTRIBUTE", "detect", "plan", "configure", "strategy",
           "trial_device", "trial_context", "distributed"]

STRATEGIES = ("default", "mirrored", "tpu")
#: Values of ``distribute`` besides ``None`` (let :func:`plan` choose).
DISTRIBUTE = ("mirrored",)
#: What a search worker process holds at its peak (TensorFlow, the memory-mapped split, a population): measured
#: 0.9-1.1 GB on the 200k table (bench/scale_rows.py ``peak_by_process``), rounded up.
WORKER_MEMORY_BYTES = 1.25 * 2**30
#: Memory the run's own process and the Prefect server keep beside the workers (1.2 GB + 0.2 GB measured).
RUN_MEMORY_BYTES = 1.5 * 2**30
CGROUP = Path("/sys/fs/cgroup")
#: float16 runs on tensor cores from Volta (7.0) on; older GPUs get slower, not faster.
MIXED_PRECISION_MIN_CAPABILITY = (7, 0)


class Device(NamedTuple):
    """A device as TensorFlow names it; ``compute_capability`` is known for CUDA GPUs only."""

    kind: str  # "TPU", "GPU" or "CPU"
    name: str  # e.g. "/device:GPU:0"
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Placement:
    """Where trials train: a strategy name and the devices of each parallel trial worker."""

    strategy: str
    workers: tuple[tuple[str, ...], ...]
    mixed_precision: bool = False
    memory_growth: bool = False

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device in use, each once, in worker order."""
        return tuple(dict.fromkeys(d for worker in self.workers for d in worker))


def _tf() -> Any:
    import tensorflow as tf

    return tf


# -- detecting ----------------------------------------------------------------------------
def detect() -> list[Device]:
    """The TPU cores, GPUs and CPUs TensorFlow can use, as logical device names.

    Physical devices split with ``tf.config.set_logical_device_configuration`` count
    as several. Only a TPU, if one is present, starts TensorFlow's runtime.
    """
    tf = _tf()
    resolver = _tpu_resolver()
    found = [Device("TPU", d.name) for d in tf.config.list_logical_devices("TPU")] if resolver else []
    for kind in ("GPU", "CPU"):
        index = 0
        for physical in tf.config.list_physical_devices(kind):
            capability = _compute_capability(tf, physical) if kind == "GPU" else None
            # Naming logical devices from their configuration, rather than listing them,
            # leaves the runtime uninitialised: memory growth can only be set before that.
            for _ in tf.config.get_logical_device_configuration(physical) or [None]:
                found.append(Device(kind, f"/device:{kind}:{index}", capability))
                index += 1
    return found


def _compute_capability(tf: Any, physical: Any) -> tuple[int, int] | None:
    try:
        capability = tf.config.experimental.get_device_details(physical).get("compute_capability")
    except (ValueError, RuntimeError):
        return None
    return tuple(capability) if capability else None


@functools.cache
def _tpu_resolver() -> Any | None:
    """The TPU cluster, connected and initialised once per process; ``None`` without a TPU."""
    # Without a hint, TPUClusterResolver asks Google Cloud's metadata server, which may hang elsewhere.
    local = bool(glob.glob("/dev/accel*"))  # a TPU VM
    if not (os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or local):
        return None
    tf = _tf()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME") or ("local" if local else None))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        warnings.warn(f"a TPU seems present but cannot be used, training on GPU/CPU: {exc}", stacklevel=2)
        return None
    return resolver


# -- deciding -----------------------------------------------------------------------------
def plan(devices: Sequence[tuple], n_trials_parallel: int | None = None, distribute: str | None = None) -> Placement:
    """Decide where trials train, from ``(kind, name[, compute_capability])`` tuples.

    - a TPU: one model across all its cores (TPUStrategy), whatever ``distribute`` says;
    - GPUs with ``distribute="mirrored"``: one model across all of them (MirroredStrategy);
    - GPUs otherwise: the default strategy, worker ``i`` on GPU ``i`` (in turn when the workers
      outnumber them; one worker: the first GPU);
    - no accelerator: the default strategy on the CPU, ``n_trials_parallel`` workers
      sharing it; ``distribute="mirrored"`` mirrors over the (logical) CPUs.

    GPUs get memory growth, and mixed precision when every GPU in use has compute
    capability 7.0 or more: networks trained one at a time then compute in float16 with a dynamically
    scaled loss (``automl.training``); population rounds keep float32 (their variables and loop are their own).
    """
    if distribute is not None and distribute not in DISTRIBUTE:
        raise ValueError(f"distribute must be None or one of {', '.join(DISTRIBUTE)}, but got {distribute=}")
    if n_trials_parallel is not None and n_trials_parallel < 1:
        raise ValueError(f"n_trials_parallel must be at least 1, but got {n_trials_parallel=}")
    devices = [Device(*d) for d in devices]
    by_kind = {kind: [d for d in devices if d.kind == kind] for kind in ("TPU", "GPU", "CPU")}
    unknown = [d for d in devices if d.kind not in by_kind]
    if unknown:
        raise ValueError(f"device kinds are TPU, GPU or CPU, but got {unknown}")
    if by_kind["TPU"]:
        return Placement("tpu", (tuple(d.name for d in by_kind["TPU"]),))
    gpus = by_kind["GPU"]
    if gpus:
        if distribute == "mirrored":
            return _on_gpus("mirrored", (tuple(g.name for g in gpus),), gpus)
        # Parallel trial workers: one GPU each (each trains its populations there), in turn when they outnumber
        # the GPUs; a single worker trains on the first.
        used = gpus[:n_trials_parallel or 1]
        return _on_gpus("default", tuple((used[i % len(used)].name,) for i in range(n_trials_parallel or 1)), used)
    cpus = tuple(d.name for d in by_kind["CPU"]) or ("/device:CPU:0",)  # TensorFlow always has a CPU
    if distribute == "mirrored":
        return Placement("mirrored", (cpus,))
    return Placement("default", ((cpus[0],),) * (n_trials_parallel or 1))


def _on_gpus(strategy_name: str, workers: tuple[tuple[str, ...], ...], used: list[Device]) -> Placement:
    mixed = all(g.compute_capability is not None and tuple(g.compute_capability) >= MIXED_PRECISION_MIN_CAPABILITY
                for g in used)
    return Placement(strategy_name, workers, mixed_precision=mixed, memory_growth=True)


# -- applying -----------------------------------------------------------------------------
def configure(placement: Placement) -> None:
    """Apply GPU memory growth and the mixed-precision policy; call before anything trains."""
    tf = _tf()
    if placement.memory_growth:
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # the runtime has started: growth can no longer change
                if not tf.config.experimental.get_memory_growth(gpu):
                    warnings.warn(f"memory growth not set on {gpu.name}: call automl.devices.configure() "
                                  "before TensorFlow first uses the GPU", stacklevel=2)
    if placement.mixed_precision:
        import keras

        # automl.training builds output layers in float32, which keeps losses and metrics stable.
        keras.mixed_precision.set_global_policy("mixed_float16")


@functools.cache
def strategy(placement: Placement) -> Any:
    """The ``tf.distribute`` strategy of ``placement`` (one per placement and process)."""
    tf = _tf()
    if placement.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(placement.workers[0]))
    if placement.strategy == "tpu":
        resolver = _tpu_resolver()
        if resolver is None:
            raise RuntimeError("the placement wants a TPU, but none can be reached; plan again from detect()")
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def trial_device(i: int, placement: Placement) -> str:
    """The device trial worker ``i`` trains on."""
    if placement.strategy in ("mirrored", "tpu"):
        raise ValueError(f"a {placement.strategy!r} placement trains each trial on several devices; "
                         "use strategy(placement) or trial_context(i, placement)")
    return placement.workers[i % len(placement.workers)][0]


def distributed() -> bool:
    """Inside a mirrored or TPU strategy's scope (:func:`trial_context`): networks then train one at a time, each
    across the strategy's devices (a population round's custom loop runs on one device)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and tf.distribute.has_strategy()


@contextlib.contextmanager
def trial_context(i: int, placement: Placement) -> Iterator[None]:
    """The scope in which trial worker ``i`` builds and trains its networks."""
    if placement.strategy in ("mirrored", "tpu"):
        with strategy(placement).scope():
            yield
    else:
        with _tf().device(trial_device(i, placement)):
            yield


def usable_cores(cgroup: Path = CGROUP) -> int:
    """Cores this process may use: the machine's, fewer under a CPU affinity mask or a container's CPU quota
    (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), at least one. ``os.cpu_count()`` says 64 in a 2-CPU
    container on a 64-core host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _read(cgroup / "cpu.max")  # "max 100000" or "200000 100000"
    if quota is None:
        v1 = _read(cgroup / "cpu" / "cpu.cfs_quota_us"), _read(cgroup / "cpu" / "cpu.cfs_period_us")
        quota = f"{v1[0]} {v1[1]}" if None not in v1 else None
    if quota is not None:
        limit, _, period = quota.partition(" ")
        if limit.lstrip("-").isdigit() and int(limit) > 0 and period.isdigit() and int(period) > 0:
            cores = min(cores, max(1, int(int(limit) / int(period) + 0.5)))
    return max(1, cores)


def memory_bytes(cgroup: Path = CGROUP, meminfo: Path = Path("/proc/meminfo")) -> float:
    """Memory this process may use: the machine's available memory (``MemAvailable``: free and reclaimable), or
    less under a container's limit; infinite where neither can be read."""
    available = float("inf")
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        limit = _read(cgroup / name)
        if limit is not None and limit.isdigit():
            available = min(available, int(limit))
    return float(available)


def default_workers(cgroup: Path = CGROUP, meminfo: Path = Path("/proc/meminfo"), spare_core: bool = True) -> int:
    """Search worker processes to start by default: one per usable core but one (``spare_core``: the run's process
    trains the scheduler's jobs on it), no more than the memory holds, at least one."""
    by_memory = (memory_bytes(cgroup, meminfo) - RUN_MEMORY_BYTES) // WORKER_MEMORY_BYTES
    return int(max(1, min(usable_cores(cgroup) - int(spare_core), by_memory)))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def free_cores() -> int:
    """Cores for scikit-learn/LightGBM: those not busy with other work (load average), at least one."""
    cores = usable_cores()
    try:
        others = max(0.0, os.getloadavg()[0] - 1)  # this process is one of the busy ones
    except OSError:
        others = 0.0
    return max(1, cores - int(others))

