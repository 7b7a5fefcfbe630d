"""One validation layer for options: numbers (finite, integer, in range) and choices, with a
`ConfigError` that names the option: `<name> must be <what>, got <value>`.

`number_problem` decides and words what is wrong; `check_number` raises it as a ConfigError, and the
CLI's argparse types (`sessrec.commands.prepare`) as an `argparse.ArgumentTypeError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

from sessrec.errors import ConfigError


def number_problem(
    value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
    high_open: bool = False, integer: bool = False, what: str | None = None,
) -> str | None:
    """None when `value` is a finite real (an integer with `integer`; never a bool) within the bounds
    (`low_open` / `high_open` exclude them); otherwise "must be ...": `what` when given, else e.g.
    "must be a finite number", "must be > 0", "must be in [0, 1)" or "must be an integer >= 1".
    """
    kind = Integral if integer else Real
    typed = isinstance(value, kind) and not isinstance(value, bool) and (integer or math.isfinite(value))
    if typed and (low is None or value > low or (not low_open and value == low)) and (
            high is None or value < high or (not high_open and value == high)):
        return None
    if what is not None:
        return f"must be {what}"
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low}"
    else:
        bounds = f"{'<' if high_open else '<='} {high}" if high is not None else ""
    if integer:
        return " ".join(("must be an integer", bounds)).rstrip()
    return f"must be {bounds}" if typed else "must be a finite number"


def check_number(name: str, value: Any, **bounds: Any) -> None:
    """ConfigError `<name> must be ..., got <value>` when `number_problem(value, **bounds)` finds one."""
    problem = number_problem(value, **bounds)
    if problem is not None:
        raise ConfigError(f"{name} {problem}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """ConfigError `<name> must be one of a, b, c, got <value>` when `value` is not among `choices`."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_lr_scale(lr_scale: Mapping[str, Any] | None, subnets: Mapping[str, Any] | None) -> None:
    """`SessionRecModule`'s `lr_scale` (subnet name -> multiplier of lr) against the net's `subnets`
    (None: a net without named subnets, e.g. GRU4Rec, which takes no scales)."""
    if not lr_scale:
        return
    if not isinstance(lr_scale, Mapping):
        raise ConfigError(f"lr_scale must be a mapping subnet name -> multiplier of lr, got {lr_scale!r}")
    if subnets is None:
        raise ConfigError("lr_scale scales the learning rate of named subnets: the net has none (use a "
                          "ParallelRNN, or leave lr_scale empty)")
    unknown = sorted(set(lr_scale) - set(subnets))
    if unknown:
        raise ConfigError(f"lr_scale: unknown subnet(s) {', '.join(map(str, unknown))} (subnets: "
                          f"{', '.join(subnets)})")
    for name, scale in lr_scale.items():
        check_number(f"lr_scale.{name}", scale, low=0, low_open=True)


def check_training_options(hp: Mapping[str, Any], subnets: Mapping[str, Any] | None = None) -> None:
    """The numeric training options of `SessionRecModule` and their combinations (ConfigError naming the
    first invalid one); `subnets`: the net's named subnets, for `lr_scale` (None: it has none)."""
    check_number("lr", hp["lr"], low=0, low_open=True)
    check_number("momentum", hp["momentum"], low=0, high=1, high_open=True)
    for name in ("weight_decay", "logq", "bpreg", "elu_param", "sample_alpha"):
        check_number(name, hp[name], low=0)
    check_number("n_sample", hp["n_sample"], low=0, integer=True)
    check_number("sample_cache_size", hp["sample_cache_size"], low=1, integer=True)
    check_number("bptt", hp.get("bptt", 1), low=1, integer=True)
    check_lr_scale(hp.get("lr_scale"), subnets)
    optimizer = hp["optimizer"]
    if optimizer != "adagrad_momentum" and hp["momentum"]:
        raise ConfigError(f"momentum is only used by optimizer='adagrad_momentum' (got {optimizer!r})")
    if optimizer == "adagrad_momentum" and hp["weight_decay"]:
        raise ConfigError(
            f"weight_decay={hp['weight_decay']} is not supported by optimizer='adagrad_momentum' (the "
            "reference's has none): use optimizer 'adamw' (or 'adam') for weight decay, or weight_decay 0"
        )
    if hp.get("negatives", "sampled") == "all" and hp["logq"]:
        raise ConfigError(
            f"logq={hp['logq']} corrects for sampled negatives: with negatives='all' (the full softmax) "
            "nothing is sampled, so set logq 0 (or negatives 'sampled')"
        )
