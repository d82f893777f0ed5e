"""Device placement: decisions on simulated device lists, a real MirroredStrategy; the M**n experiment
through ``python -m automl.device_bench``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from automl.devices import Placement, plan, trial_device
from conftest import REPO, run_module, subprocess_env

CPU = ("CPU", "/device:CPU:0")


def _gpus(n: int, capability: tuple[int, int] | None = (8, 0)) -> list[tuple]:
    return [("GPU", f"/device:GPU:{i}", capability) for i in range(n)]


def test_no_devices_or_cpu_only_train_on_the_cpu_with_the_default_strategy():
    for devices in ([], [CPU]):
        p = plan(devices)
        assert p == Placement("default", (("/device:CPU:0",),))
        assert trial_device(0, p) == trial_device(3, p) == "/device:CPU:0"
        assert not p.mixed_precision and not p.memory_growth
    # Parallel trial workers on a CPU share it.
    assert plan([CPU], n_trials_parallel=2).workers == (("/device:CPU:0",),) * 2


def test_one_gpu_gets_memory_growth_and_mixed_precision_only_if_capable():
    p = plan([CPU, *_gpus(1, (7, 5))])
    assert (p.strategy, p.devices, p.memory_growth, p.mixed_precision) == ("default", ("/device:GPU:0",), True, True)
    assert trial_device(0, p) == "/device:GPU:0"
    assert not plan([CPU, *_gpus(1, (6, 1))]).mixed_precision  # Pascal: float16 is slower there
    assert not plan([CPU, ("GPU", "/device:GPU:0")]).mixed_precision  # capability unknown: stay safe


def test_four_gpus_train_one_worker_each_or_one_mirrored_model():
    for n_trials_parallel in (None, 1):
        p = plan([CPU, *_gpus(4)], n_trials_parallel)
        assert p == Placement("default", (("/device:GPU:0",),), mixed_precision=True, memory_growth=True)
        assert [trial_device(i, p) for i in range(3)] == ["/device:GPU:0"] * 3
    # Parallel workers: each trains its populations on its own GPU; more workers than GPUs share them in turn.
    p = plan([CPU, *_gpus(4)], 2)
    assert [trial_device(i, p) for i in range(2)] == ["/device:GPU:0", "/device:GPU:1"]
    assert p.devices == ("/device:GPU:0", "/device:GPU:1") and p.memory_growth
    p = plan([CPU, *_gpus(4)], 6)
    assert [trial_device(i, p) for i in range(6)] == [f"/device:GPU:{i % 4}" for i in range(6)]
    # Only the GPU that trains decides on mixed precision.
    assert plan([CPU, *_gpus(1), ("GPU", "/device:GPU:1", (6, 0))]).mixed_precision

    mirrored = plan([CPU, *_gpus(4)], distribute="mirrored")
    assert mirrored.strategy == "mirrored" and mirrored.workers == (tuple(f"/device:GPU:{i}" for i in range(4)),)
    assert mirrored.memory_growth and mirrored.mixed_precision
    with pytest.raises(ValueError, match="several devices"):
        trial_device(0, mirrored)
    # One GPU without the capability turns mixed precision off for the model spread over all.
    assert not plan([CPU, *_gpus(3), ("GPU", "/device:GPU:3", (6, 0))], distribute="mirrored").mixed_precision


def test_a_tpu_trains_one_model_over_all_its_cores():
    cores = [("TPU", f"/job:worker/replica:0/task:0/device:TPU:{i}") for i in range(8)]
    for distribute in (None, "mirrored"):
        p = plan([CPU, *cores], distribute=distribute)
        assert p.strategy == "tpu" and len(p.devices) == 8 and not p.memory_growth


def test_bad_arguments_say_what_was_wrong():
    with pytest.raises(ValueError, match="distribute='horovod'"):
        plan([CPU], distribute="horovod")
    with pytest.raises(ValueError, match="n_trials_parallel=0"):
        plan([CPU], n_trials_parallel=0)
    with pytest.raises(ValueError, match="IPU"):
        plan([("IPU", "/device:IPU:0")])


# Logical devices must be set before TensorFlow initialises: hence a fresh process.
_MIRRORED = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from automl import devices

    found = devices.detect()
    placement = devices.plan(found, distribute="mirrored")
    devices.configure(placement)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) > 0).astype("float32")
    keras.utils.set_random_seed(0)
    with devices.trial_context(0, placement):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    print(json.dumps({"devices": [list(d[:2]) for d in found], "strategy": placement.strategy,
                      "replicas": model.distribute_strategy.num_replicas_in_sync, "loss": history.history["loss"],
                      "variable": type(model.weights[0].value).__name__}))
""")


def test_mirrored_strategy_trains_across_two_logical_cpus(tmp_path):
    done = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == [["CPU", "/device:CPU:0"], ["CPU", "/device:CPU:1"]]
    assert result["strategy"] == "mirrored" and result["replicas"] == 2
    assert result["variable"] == "MirroredVariable"  # the model was built, and so trains, under the strategy
    assert result["loss"][-1] < 0.6 * result["loss"][0]  # it learnt, with gradients summed over both replicas


def test_the_cli_trains_every_network_under_distribute_mirrored(prefect_api, tmp_path):
    """``--distribute mirrored`` through the real CLI: the networks train under the strategy, one at a time (a
    population round's custom loop would train on one device; the worker once crashed leaving the scope, which
    clearing Keras's session had reset)."""
    import optuna

    out = tmp_path / "out"
    proc = run_module("automl.run", "diabetes", "--distribute", "mirrored", "--max-runtime-secs", 90, "--workers", 1,
                      "--max-models", 3, "--nfolds", 3, "--include-algos", "MLP,GLM", "--output", out, cwd=tmp_path,
                      CI="true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = (out / "event_log.csv").read_text()
    assert "strategy='mirrored'" in events
    assert "MLP" in set(pd.read_csv(out / "leaderboard.csv")["algo"]), events[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "search" / "study.journal")))
    (name,) = [n for n in optuna.study.get_all_study_names(storage) if not n.endswith("-gbm")]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    trained = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]  # not the 4th portfolio warm start
    assert len(trained) == 3 and not any("population" in t.user_attrs for t in trained)  # each trained alone


def test_matrix_power_experiment_on_cpu(tmp_path):
    done = run_module("automl.device_bench", "--size", "256", "--power", "3", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GFLOP/s" in done.stdout and "CPU" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = [r for r in result["devices"] if r["kind"] == "CPU"]
    assert (result["size"], result["power"]) == (256, 3)
    assert len(cpu) == 1 and cpu[0]["gflops"] > 0 and cpu[0]["seconds"] > 0


def test_bad_experiment_arguments_exit_2(tmp_path):
    done = run_module("automl.device_bench", "--power", "1", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "--power >= 2" in done.stderr and "Traceback" not in done.stderr


def test_importing_devices_does_not_import_tensorflow():
    code = "import sys, automl.devices, automl.device_bench; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def _cgroup(tmp_path, cpu_max: str | None = None, memory_max: str | None = None, available_gib: float = 200.0):
    root = tmp_path / "cgroup"
    root.mkdir()
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    if memory_max is not None:
        (root / "memory.max").write_text(memory_max + "\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 270000000 kB\nMemAvailable: {int(available_gib * 2**20)} kB\n")
    return root, meminfo


def test_the_default_worker_count_follows_the_cpu_quota_not_the_hosts_cores(tmp_path, monkeypatch):
    """A 2-CPU container on a 64-core host: one worker (one core left to the run), not 63 TensorFlow processes."""
    from automl.devices import default_workers, usable_cores

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    unlimited, meminfo = _cgroup(tmp_path, cpu_max="max 100000")
    assert usable_cores(unlimited) == 64 and default_workers(unlimited, meminfo) == 63
    assert default_workers(unlimited, meminfo, spare_core=False) == 64  # an image run under a holdout
    (unlimited / "cpu.max").write_text("200000 100000\n")  # a quota of 2 CPUs
    assert usable_cores(unlimited) == 2 and default_workers(unlimited, meminfo) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # taskset -c 0-3
    (unlimited / "cpu.max").write_text("max 100000\n")
    assert usable_cores(unlimited) == 4 and default_workers(unlimited, meminfo) == 3


def test_the_default_worker_count_follows_the_memory(tmp_path, monkeypatch):
    """64 cores and 8 GiB of memory (the container's limit, or what the host has available): as many ~1.25 GB
    workers as fit beside the run's own process."""
    from automl.devices import RUN_MEMORY_BYTES, WORKER_MEMORY_BYTES, default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    limited, meminfo = _cgroup(tmp_path, memory_max=str(8 * 2**30))
    fits = int((8 * 2**30 - RUN_MEMORY_BYTES) // WORKER_MEMORY_BYTES)
    assert default_workers(limited, meminfo) == fits == 5
    (limited / "memory.max").write_text("max\n")
    assert default_workers(limited, meminfo) == 63
    meminfo.write_text(f"MemAvailable: {2 * 2**20} kB\n")  # 2 GiB available
    assert default_workers(limited, meminfo) == 1  # never none: the search needs one


def test_a_run_starts_the_default_worker_count(tmp_path, monkeypatch):
    """The run's state asks devices.default_workers when --workers is not given."""
    from automl import devices
    from automl.config import RunConfig
    from automl.state import _workers

    monkeypatch.setattr(devices, "usable_cores", lambda cgroup=None: 64)
    monkeypatch.setattr(devices, "default_workers", lambda cgroup=None, meminfo=None, spare_core=True: 5)
    assert _workers(RunConfig.from_options(), 120.0) == {"workers": 5, "background": True}
    assert _workers(RunConfig.from_options(workers=2), 120.0) == {"workers": 2}
