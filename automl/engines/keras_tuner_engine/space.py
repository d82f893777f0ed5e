"""Our search spaces as Keras Tuner's ``HyperParameters``, and a trial's values back as the space's parameters."""

from __future__ import annotations

from typing import Any

from automl.spaces import Choice, Float, Int, Param

__all__ = ["render", "params_of", "warm_start"]


def render(space: tuple[Param, ...]) -> Any:
    """Render ``space`` as Keras Tuner ``HyperParameters`` (the counterpart of :func:`automl.spaces.suggest`)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for p in space:
        if p.name.startswith("tuner/"):
            raise ValueError(f"parameter names starting with 'tuner/' belong to Keras Tuner, but got {p.name=}")
        if isinstance(p, Int | Float) and p.low == p.high:
            # A zero-width range breaks Bayesian optimisation (it scales values by high - low).
            hp.Fixed(p.name, _typed(p, p.low))
        elif isinstance(p, Int):
            hp.Int(p.name, p.low, p.high, sampling="log" if p.log else "linear")
        elif isinstance(p, Float):
            hp.Float(p.name, float(p.low), float(p.high), sampling="log" if p.log else "linear")
        elif len(p.choices) == 1:
            hp.Fixed(p.name, p.choices[0])
        elif all(isinstance(c, bool) for c in p.choices):
            hp.Boolean(p.name)  # hp.Choice would turn False/True into the ints 0/1
        else:
            try:
                hp.Choice(p.name, list(p.choices))
            except TypeError:
                raise ValueError(f"Keras Tuner needs one value type per Choice, but got {p.name}: {p.choices=}") \
                    from None
    return hp


def _typed(p: Param, value: Any) -> Any:
    """``value`` with the type the Optuna engine gives ``p`` (JSON and Keras Tuner may change it)."""
    if isinstance(p, Int):
        return int(value)
    if isinstance(p, Float):
        return float(value)
    return value


def params_of(space: tuple[Param, ...], values: dict[str, Any]) -> dict[str, Any]:
    """The space's parameters out of a trial's values (which also hold Hyperband's ``tuner/*``)."""
    return {p.name: _typed(p, values[p.name]) for p in space}


def warm_start(space: tuple[Param, ...], values: dict[str, Any]) -> dict[str, Any]:
    """A warm start as trial values; it must lie inside the space (Bayesian optimisation embeds it there)."""
    missing = [p.name for p in space if p.name not in values]
    if missing:
        raise ValueError(f"warm start {values} lacks {missing}")
    for p in space:
        v = values[p.name]
        inside = v in p.choices if isinstance(p, Choice) else p.low <= v <= p.high
        if not inside:
            raise ValueError(f"warm start value {p.name}={v!r} lies outside the space: {p}")
    return params_of(space, values)
