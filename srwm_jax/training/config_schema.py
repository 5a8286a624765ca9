"""Declarative checks of config fields: one rule per field (type, range, allowed values).

Each stack states its rules in one table (fewshot/config_checks.py, rl/config_checks.py);
`field_problems` applies them and returns every violation as a short phrase, so a CLI can
refuse a config in one line before anything is written:

    RULES = {"n_way": Int(2), "dropout": Float(0, 1, hi_open=True), "model": Choice(*KINDS)}
    problems = field_problems(config, RULES)  # ["n_way=0 must be an int >= 2", ...]

A rule is a callable value -> problem phrase (without the field name) or None.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence

Rule = Callable[[object], "str | None"]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _range_text(kind, lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi}"
    return kind


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))


# The largest int any field may take unless its rule says less: a signed 64-bit integer, what
# NumPy and jax (random keys, array conversions) accept; Python ints are unbounded.
INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Int:
    """An int (not a bool) in [lo, hi] (hi None: up to INT64_MAX, the most the code takes)."""
    lo: int | None = None
    hi: int | None = None

    def __call__(self, v):
        if not _is_int(v) or not _in_range(v, self.lo, self.hi, False, False):
            return f"must be an {_range_text('int', self.lo, self.hi)}"
        if self.hi is None and v > INT64_MAX:
            return "must be an int < 2**63 (a signed 64-bit integer, the most the code takes)"
        return None


@dataclasses.dataclass(frozen=True)
class Float:
    """A finite real number (an int is accepted, a bool, NaN and +-inf are not) in the range
    given; `*_open` excludes that bound."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, v):
        if _is_number(v) and v == v and not math.isfinite(v):
            return "must be a finite " + _range_text("number", self.lo, self.hi, self.lo_open,
                                                     self.hi_open)
        if not _is_number(v) or v != v or not _in_range(v, self.lo, self.hi, self.lo_open,
                                                         self.hi_open):
            return ("must be a "
                    f"{_range_text('number', self.lo, self.hi, self.lo_open, self.hi_open)}")
        return None


class Choice:
    """One of the given values (compared with ==, types checked: "1" is not 1)."""

    def __init__(self, *options):
        self.options = tuple(options)

    def __call__(self, v):
        if not any(type(v) is type(o) and v == o for o in self.options):
            return f"choose one of {self.options}"
        return None


def Bool(v):  # noqa: N802 - a rule, named like the others
    """True or False."""
    return None if isinstance(v, bool) else "must be True or False"


def Str(v):  # noqa: N802
    """Any string (paths, names checked elsewhere)."""
    return None if isinstance(v, str) else "must be a string"


@dataclasses.dataclass(frozen=True)
class TupleOf:
    """A tuple or list whose items all pass `item`, of `length` items (None: any, at least
    `min_length`)."""
    item: Rule
    length: int | None = None
    min_length: int = 0

    def __call__(self, v):
        if isinstance(v, str) or not isinstance(v, Sequence):
            return "must be a tuple" + (f" of {self.length} items" if self.length else "")
        if self.length is not None and len(v) != self.length:
            return f"must have {self.length} items, has {len(v)}"
        if len(v) < self.min_length:
            return f"must have at least {self.min_length} item(s)"
        for i, x in enumerate(v):
            why = self.item(x)
            if why:
                return f"item {i} ({x!r}) {why}"
        return None


def _leaves(config, prefix=""):
    """(dotted name, value) of every non-dict field of a ConfigDict / Mapping."""
    for key in config.keys():
        value = config[key]
        if hasattr(value, "keys"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def leaf_names(config) -> list[str]:
    """Dotted names of every field of `config` (sub-configs flattened: "agent.core")."""
    return [name for name, _ in _leaves(config)]


def closest(name: str, candidates) -> str | None:
    """The candidate closest to a misspelt `name` (difflib ratio >= 0.75: one or two letters
    off), or None."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return match[0] if match else None


class ConfigError(ValueError):
    """A config that cannot run (few-shot or RL); the message names each bad field, its value
    and what is allowed."""


def config_problems(config, rules: Mapping[str, Rule], between,
                    allow_extra: bool = False) -> list[str]:
    """`field_problems`, then, only when every field is well typed (the rules between fields
    assume it), `between(config)`: the list of problems between fields."""
    return field_problems(config, rules, allow_extra) or between(config)


def field_problems(config, rules: Mapping[str, Rule], allow_extra: bool = False,
                   prefix: str = "config.") -> list[str]:
    """Every field of `config` that breaks its rule, as phrases "config.<name>=<value> <why>".

    Args:
      config: ConfigDict (sub-configs are addressed with dotted names, "agent.core").
      rules: {dotted name: rule}; a name missing from `config` is a problem.
      allow_extra: accept fields without a rule (a run's config.json may hold fields that an
        older version had); False reports them with the closest known name.
    """
    problems = []
    values = dict(_leaves(config))
    for name, rule in rules.items():
        if name not in values:
            problems.append(f"{prefix}{name} is missing")
            continue
        why = rule(values[name])
        if why:
            problems.append(f"{prefix}{name}={values[name]!r} {why}")
    if not allow_extra:
        for name in values:
            if name not in rules:
                match = closest(name, rules)
                hint = f" (did you mean {match!r}?)" if match else ""
                problems.append(f"{prefix}{name} is not a known field{hint}")
    return problems
