"""The CPU-vs-GPU experiment: ``python -m automl.device_bench [--size N] [--power P] [--repeats R]``.

It lists the devices TensorFlow sees and the placement :func:`automl.devices.plan`
would choose, then times M**P (P-1 matrix products) on each device and reports
GFLOP/s. TensorFlow is imported inside functions only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from automl.devices import Device, Placement, detect, plan

__all__ = ["matrix_power_speed", "main"]


def matrix_power_speed(device: str, size: int, power: int, repeats: int = 3) -> dict[str, Any]:
    """Time M**power for a random ``size``×``size`` matrix on ``device``; best of ``repeats`` runs."""
    if size < 1 or power < 2 or repeats < 1:
        raise ValueError(f"need size >= 1, power >= 2, repeats >= 1, but got {size=}, {power=}, {repeats=}")
    import tensorflow as tf

    with tf.device(device):
        # Scaled so that the spectral radius is about 1: M**n neither overflows nor vanishes.
        m = tf.random.normal((size, size), seed=0) / math.sqrt(size)

        def run() -> float:
            result = m
            for _ in range(power - 1):
                result = tf.linalg.matmul(result, m)
            return float(tf.reduce_sum(result))  # copying to the host waits for the device

        run()  # warm-up: kernel selection and allocation are not part of the speed
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
    best = min(seconds)  # the least disturbed run: other processes share the machine
    flops = 2.0 * size**3 * (power - 1)
    return {"device": device, "seconds": round(best, 4), "gflops": round(flops / best / 1e9, 2)}


def _experiment_devices(devices: list[Device]) -> list[Device]:
    """One CPU (logical CPUs share the same cores), every GPU, and the first TPU core."""
    cpu = [d for d in devices if d.kind == "CPU"][:1] or [Device("CPU", "/device:CPU:0")]
    return cpu + [d for d in devices if d.kind == "GPU"] + [d for d in devices if d.kind == "TPU"][:1]


def _speeds(devices: list[Device], size: int, power: int, repeats: int) -> list[dict[str, Any]]:
    """One row per experiment device, with its speed relative to the CPU's."""
    rows = []
    for d in _experiment_devices(devices):
        try:
            rows.append({"kind": d.kind, **matrix_power_speed(d.name, size, power, repeats)})
        except Exception as exc:  # one unusable device must not hide the others' numbers
            rows.append({"kind": d.kind, "device": d.name, "seconds": None, "gflops": None,
                         "error": f"{type(exc).__name__}: {exc}"[:200]})
    cpu = next((r["gflops"] for r in rows if r["kind"] == "CPU" and r["gflops"]), None)
    for r in rows:
        r["vs_cpu"] = round(r["gflops"] / cpu, 2) if cpu and r["gflops"] else None
    return rows


def _print_devices(devices: list[Device], placement: Placement) -> None:
    print("devices:")
    for d in devices:
        print(f"  {d.kind:<4} {d.name}" + (f"  compute capability {d.compute_capability}"
                                           if d.compute_capability else ""))
    print(f"placement: {placement.strategy} on {', '.join(placement.devices)}; mixed precision "
          f"{'on' if placement.mixed_precision else 'off'}")


def _print_speeds(rows: list[dict[str, Any]], size: int, power: int, repeats: int) -> None:
    print(f"\nM**{power} for a {size}x{size} float32 matrix ({power - 1} products), best of {repeats}:")
    print(f"{'device':<34} {'kind':<4} {'seconds':>9} {'GFLOP/s':>9} {'vs CPU':>7}")
    for r in rows:
        if r["gflops"] is None:
            print(f"{r['device']:<34} {r['kind']:<4} failed: {r['error']}")
        else:
            print(f"{r['device']:<34} {r['kind']:<4} {r['seconds']:>9.3f} {r['gflops']:>9.1f} {r['vs_cpu']:>6.1f}x")


def main(argv: list[str] | None = None) -> int:
    """The CLI: device list, placement, a speed table, and a last line of JSON; 2 on bad arguments."""
    p = argparse.ArgumentParser(prog="python -m automl.device_bench",
                                description="List the devices TensorFlow sees and the placement automl would use; "
                                            "time M**power on each device and report GFLOP/s (last line: JSON).")
    p.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    p.add_argument("--power", type=int, default=6, help="the power n in M**n, at least 2 (default 6)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per device; the best counts (default 3)")
    args = p.parse_args(argv)
    if args.size < 1 or args.power < 2 or args.repeats < 1:
        print(f"error: need --size >= 1, --power >= 2, --repeats >= 1, but got size={args.size}, "
              f"power={args.power}, repeats={args.repeats}", file=sys.stderr)
        return 2
    devices = detect()
    placement = plan(devices)
    _print_devices(devices, placement)
    rows = _speeds(devices, args.size, args.power, args.repeats)
    _print_speeds(rows, args.size, args.power, args.repeats)
    print(json.dumps({"size": args.size, "power": args.power, "repeats": args.repeats,
                      "placement": placement.strategy, "devices": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
