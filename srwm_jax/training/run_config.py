"""Run configs: `workdir/config.json` written at the start of a run and read back merged
onto defaults the caller passes, so fields added to a config file after a run was made take
their default values (no `config.get(key, default)` restating them in the library).

The library never imports `configs/`: callers (CLIs, tests) load the defaults and pass them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

import ml_collections

from .config_schema import closest

CONFIG_FILE = "config.json"


class RunConfigError(ValueError):
    """A run directory or config override that cannot be used; the message says what to do."""


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Writes `config` to `workdir/config.json` (made if missing). Returns the path."""
    return write_config_data(workdir, config_data(config))


def write_config_data(workdir: str, data: Mapping) -> str:
    """Writes config data to `workdir/config.json` atomically (a killed process leaves the old
    file or the new one, never a truncated one). Returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
    return path


def config_data(config: ml_collections.ConfigDict) -> dict:
    """`config` as the plain JSON data `save_config` writes (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def flatten(data: Mapping, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted field names of nested config data."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_fingerprint(data: Mapping, ignore: Iterable[str] = ()) -> str:
    """A short hash (16 hex digits of sha256) of config data (as written to config.json),
    leaving out the dotted fields in `ignore` (those a resumed run may change, such as logging
    intervals): two configs with the same fingerprint make the same computation. Stored with
    every checkpoint (srwm_jax.training.checkpoints) and checked against config.json."""
    ignore = set(ignore)
    kept = {k: v for k, v in flatten(data).items() if k not in ignore}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_config_data(workdir: str) -> dict | None:
    """The raw JSON data of `workdir/config.json`, None if there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def workdir_fingerprint(workdir: str, ignore: Iterable[str] = ()) -> str | None:
    """config_fingerprint of `workdir/config.json` as it is on disk (None without one)."""
    data = read_config_data(workdir)
    return None if data is None else config_fingerprint(data, ignore)


def _like(default, value):
    """JSON turns tuples into lists: give `value` back the tuple type of `default`."""
    if isinstance(default, tuple) and isinstance(value, list):
        inner = default[0] if default else None
        return tuple(_like(inner, v) if inner is not None else
                     (tuple(v) if isinstance(v, list) else v) for v in value)
    return value


def merge(defaults: ml_collections.ConfigDict, data: Mapping) -> ml_collections.ConfigDict:
    """`defaults` (copied) with every key of `data` set over it, recursively for sub-configs.

    Keys of `data` that `defaults` lacks are kept (removed fields of an older run)."""
    config = ml_collections.ConfigDict(defaults.to_dict())
    for key, value in data.items():
        current = config.get(key)
        if isinstance(current, ml_collections.ConfigDict) and isinstance(value, Mapping):
            config[key] = merge(current, value)
        else:
            value = _like(current, value)
            if (isinstance(current, float) and isinstance(value, int)
                    and not isinstance(value, bool)):
                value = float(value)  # JSON writes 2.0 as 2.0, but hand-edited files may not
            if current is not None and value is not None and type(current) is not type(value):
                # ConfigDict fields are typed; e.g. an int stored where the default is a float.
                del config[key]
            config[key] = value
    return config


def load_config(workdir: str, defaults: ml_collections.ConfigDict | None = None,
                renames: Mapping[str, str] | None = None) -> ml_collections.ConfigDict:
    """Reads `workdir/config.json`, merged onto `defaults`.

    Args:
      workdir: a run directory written by a trainer.
      defaults: the config whose fields fill keys the run's file lacks (None: the file as is).
      renames: {old key: new key} for fields renamed since older runs were made.
    Returns:
      The run's ConfigDict.
    Raises:
      FileNotFoundError: `workdir/config.json` does not exist.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a run directory written by "
                                "a trainer (fewshot.train, rl.train).")
    with open(path) as f:
        data = json.load(f)
    for old, new in (renames or {}).items():
        if old in data and new not in data:
            data[new] = data.pop(old)
    if defaults is None:
        return ml_collections.ConfigDict(data)
    return merge(defaults, data)


def load_config_file(path: str | None) -> ml_collections.ConfigDict | None:
    """`get_config()` of the Python config file at `path` (a `configs/**/*.py` file), or
    `get_config(arg)` for `path` = `FILE:arg` (ml_collections' form); None for None (no
    defaults file: an installed copy run outside a checkout has no configs/ folder). The
    file's package is made importable first (`register_config_package`), so a config that
    imports a sibling loads from any current directory.

    Raises:
      FileNotFoundError: no such file.
    """
    if path is None:
        return None
    file, *arg = path.split(":", 1)
    if not os.path.exists(file):
        raise FileNotFoundError(f"config file {file} not found")
    register_config_package(file)
    spec = importlib.util.spec_from_file_location("_run_config_file", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*arg)


def register_config_package(path: str) -> None:
    """Makes the package that holds the config file `path` importable by its own name, so
    `from configs.fewshot.default import ...` inside a config works wherever the command runs
    (a clone, a copy of configs/, an installed srwm_jax used from another folder).

    The package is the topmost folder above `path` with an `__init__.py` (`configs` for
    `configs/fewshot/x.py`); it is registered in `sys.modules` from that folder, without
    putting its parent (which may hold other packages) on `sys.path`. A package of that name
    that is already imported is left as it is; a file outside any package needs nothing.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(os.path.join(folder, "__init__.py")):
        return
    while os.path.exists(os.path.join(os.path.dirname(folder), "__init__.py")):
        folder = os.path.dirname(folder)
    name = os.path.basename(folder)
    if name in sys.modules or not name.isidentifier():
        return
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def config_flag_problem(argv: Sequence[str]) -> str | None:
    """The problem with `--config FILE` (a missing file) or with the first `--config.a.b=...`
    of `argv` that names a key the config file lacks, with the closest valid key (difflib);
    None if there is none (or no --config flag, or a file that fails to load: absl reports
    those)."""
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        return None
    if not os.path.exists(path.split(":")[0]):
        return f"--config file {path.split(':')[0]} not found"
    try:
        config = load_config_file(path)
    except Exception as e:  # noqa: BLE001 - any error of the config's own code, in one line
        return f"--config file {path} could not be loaded: {type(e).__name__}: {e}"
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config."):].split("=", 1)[0]
        node = config
        for i, part in enumerate(dotted.split(".")):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(dotted.split(".")[:i])
                keys = sorted(node.keys()) if hasattr(node, "keys") else []
                prefix = f"{where}." if where else ""
                match = closest(part, keys)
                hint = (f"did you mean --config.{prefix}{match}?" if match else
                        f"{where or 'the config'} has no field {part!r} (see {path})")
                return f"unknown config key {dotted!r} in {path}: {hint}"
            node = node[part]
    return None

