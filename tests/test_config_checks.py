"""Bad configs are refused before anything is written: every field of both default configs has
a rule, every config file passes (no false refusals), bad values and data that cannot hold the
episodes are named in one line, and every CLI reports bad flags in one `error:` line with a
non-zero exit and no traceback (a few subprocesses prove the wiring)."""
import importlib
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR, REPO_ROOT

from configs.fewshot.default import get_config as fewshot_default
from configs.fewshot.omniglot_smoke import get_config as smoke_config
from configs.rl.default import get_config as rl_default
from configs.rl.ff_cpu import get_config as rl_cpu_config
from fewshot import config_checks as fewshot_checks
from fewshot.data import load_split
from fewshot.data.metadata import class_sizes
from rl import config_checks as rl_checks
from srwm_jax.training.cli import one_line
from srwm_jax.training.config_schema import leaf_names
from srwm_jax.training.run_config import config_flag_problem, load_config, save_config

STACKS = {"fewshot": (fewshot_default, fewshot_checks), "rl": (rl_default, rl_checks)}


def _untyped(config, **overrides):
    """A copy of `config` that takes values of any type (as a hand-edited config.json gives)."""
    c = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    for dotted, value in overrides.items():
        node = c
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return c


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_default_field_has_a_rule_that_its_default_passes(stack):
    defaults, checks = STACKS[stack]
    config = defaults()
    fields, rules = set(leaf_names(config)), set(checks.FIELD_RULES)
    assert not fields - rules, (f"fields of configs/{stack}/default.py without a rule in "
                                f"{stack}/config_checks.py")
    assert not rules - fields, (f"rules in {stack}/config_checks.py for no field of "
                                f"configs/{stack}/default.py")
    assert checks.field_problems(config) == []


def _config_files(stack):
    folder = REPO_ROOT / "configs" / stack
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "table1"))
    configs = [importlib.import_module(f"configs.{stack}.{n}").get_config() for n in names]
    if (folder / "table1.py").exists():  # one config file, a row per argument
        table1 = importlib.import_module(f"configs.{stack}.table1")
        configs += [table1.get_config(f"{dataset},{model},{k}")
                    for dataset, shots in table1.TABLE1_SHOTS.items()
                    for model in table1.TABLE1_MODELS for k in shots]
    return configs


def test_every_rl_config_file_passes():
    configs = _config_files("rl")
    assert len(configs) >= 4
    for config in configs:
        rl_checks.validate_config(config, num_devices=1)


@pytest.mark.omniglot
def test_every_fewshot_config_file_passes_with_its_data():
    """Fields and devices for all; the episodes against the data for those whose data is here
    (Omniglot and its transformed copy; Mini-ImageNet / FC100 are not in ../shared/data)."""
    configs = _config_files("fewshot")
    assert len(configs) >= 20
    here = {"omniglot", "omniglot_transformed"}
    checked = 0
    for config in configs:
        fewshot_checks.validate_config(config, num_devices=1, splits=())
        if config.dataset in here and (config.task != "sequential"
                                       or config.second_dataset in here):
            config.data_dir, config.second_data_dir = str(OMNIGLOT_DIR), ""
            assert fewshot_checks.data_problems(config, ("train", "val", "test")) == []
            checked += 1
    assert checked >= 8


FEWSHOT_BAD = [  # (field, value, words of the message)
    ("k_shot", 0, "config.k_shot=0 must be an int >= 1"),
    ("n_way", 1, "config.n_way=1 must be an int >= 2"),
    ("batch_size", "abc", "config.batch_size='abc' must be an int >= 1"),
    ("batch_size", 2.5, "config.batch_size=2.5 must be an int"),
    ("learning_rate", 0.0, "config.learning_rate=0.0 must be a number > 0.0"),
    ("dropout", 1.0, "config.dropout=1.0 must be a number in [0.0, 1.0)"),
    ("adam_b2", float("nan"), "config.adam_b2=nan must be a number"),
    ("normalize", 1, "config.normalize=1 must be True or False"),
    ("model", "gru", "config.model='gru' choose one of"),
    ("schedule", "linear", "config.schedule='linear' choose one of"),
    ("res12_channels", (64, 96, 128), "config.res12_channels=(64, 96, 128) must have 4 items"),
    ("res12_channels", (64, 0, 1, 2), "item 1 (0) must be an int >= 1"),
    ("image_size", 8, "config.image_size=8 must be an int >= 16"),
    ("seed", -1, "config.seed=-1 must be an int >= 0"),
    # Non-finite numbers and ints past what the code takes (issue 24 kinds 1 and 7).
    ("learning_rate", float("inf"), "config.learning_rate=inf must be a finite number > 0.0"),
    ("clip_grad_norm", float("inf"), "config.clip_grad_norm=inf must be a finite number >= 0.0"),
    ("seed", 2**63, "config.seed=9223372036854775808 must be an int < 2**63"),
    ("total_steps", 10**30, "must be an int < 2**63"),
    ("batch_sise", 4, "config.batch_sise is not a known field (did you mean 'batch_size'?)"),
]


@pytest.mark.parametrize("field, value, words", FEWSHOT_BAD,
                         ids=[f"{f}={v!r}" for f, v, _ in FEWSHOT_BAD])
def test_fewshot_bad_field_is_named(field, value, words):
    with pytest.raises(fewshot_checks.ConfigError) as info:
        fewshot_checks.validate_config(_untyped(fewshot_default(), **{field: value}), splits=())
    assert words in str(info.value) and "\n" not in str(info.value)


def test_fewshot_rules_between_fields_and_several_problems_in_one_line():
    check = lambda **kw: fewshot_checks.field_problems(_untyped(fewshot_default(), **kw))  # noqa: E731
    assert check(data_source="pkl") == ["config.data_source='pkl' does not apply to omniglot: "
                                        "choose one of ('auto', 'npz', 'png', 'tfds')"]
    assert "not divisible by config.num_heads=5" in check(num_heads=5)[0]
    assert check(num_heads=5, model="lstm") == []  # the LSTM has no heads
    assert "future_shots=0 with task='bootstrap'" in check(task="bootstrap")[0]
    assert "max_trim=75 must be below" in check(task="sequential", n_way=5, sequential_shots=15,
                                                max_trim=75)[0]
    with pytest.raises(fewshot_checks.ConfigError, match=r"k_shot=0 .*; config.model='x'"):
        fewshot_checks.validate_config(_untyped(fewshot_default(), k_shot=0, model="x"), splits=())
    c = fewshot_default()
    assert fewshot_checks.device_problems(c, 3) == [
        "config.batch_size=128 must be divisible by the 3 devices"]
    assert fewshot_checks.device_problems(c, 4) == []


@pytest.mark.omniglot
def test_fewshot_episodes_are_checked_against_the_split_data():
    """Omniglot (Vinyals split): 1028 / 172 / 423 characters x 20 drawings, x4 with rotations."""
    def problems(splits=("train", "val"), **kw):
        c = smoke_config()
        c.data_dir = str(OMNIGLOT_DIR)
        c.update(kw)
        return fewshot_checks.data_problems(c, splits)
    assert problems() == []
    with pytest.raises(fewshot_checks.ConfigError,
                       match="init_from='/nonexistent/run' is not a run"):
        fewshot_checks.validate_config(_untyped(smoke_config(), data_dir=str(OMNIGLOT_DIR),
                                                init_from="/nonexistent/run"))
    assert problems(n_way=1000) == ["config.n_way=1000 but omniglot val (rotations='all') has 688 "
                                    "classes: use n_way <= 688"]
    assert problems(n_way=200, rotations="none") == [
        "config.n_way=200 but omniglot val (rotations='none') has 172 classes: use n_way <= 172"]
    assert problems(splits=("test",), n_way=1692) == []
    # 19 shots + one query = the 20 drawings of a class; one more cannot be drawn
    assert problems(k_shot=19) == []
    assert problems(k_shot=20)[0].startswith("episodes take 21 images per class")
    # training episodes: 2 queries per class on top of 18 shots (val scores one query)
    assert len(problems(k_shot=18, train_queries=2 * 2)) == 0
    assert "omniglot train" in problems(k_shot=18, train_queries=2 * 2 + 1)[0]
    assert "omniglot train" in problems(task="bootstrap", k_shot=1, future_shots=19)[0]
    seq = dict(task="sequential", second_dataset="omniglot_transformed", second_data_dir="",
               n_way=5, max_trim=10)
    assert problems(sequential_shots=20, **seq) == []
    assert "(sequential_shots)" in problems(sequential_shots=21, **seq)[0]


@pytest.mark.omniglot
@pytest.mark.parametrize("rotations", ["all", "none", "train_only"])
def test_class_sizes_from_metadata_match_the_loaded_split(rotations):
    sizes = class_sizes("omniglot", OMNIGLOT_DIR, "val", rotations=rotations)
    np.testing.assert_array_equal(
        sizes, load_split("omniglot", OMNIGLOT_DIR, "val", rotations=rotations).class_sizes)
    assert len(sizes) == (172 if rotations != "all" else 688)


RL_BAD = [
    ("discount", 1.5, "config.discount=1.5 must be a number in [0.0, 1.0]"),
    ("games", ("starpilot", "coinrunn"), "config.games=('starpilot', 'coinrunn') item 1"),
    ("games", (), "config.games=() must have at least 1 item"),
    ("num_actions", 16, "config.num_actions=16 must be an int in [1, 15]"),
    ("agent__core", "gru", "config.agent.core='gru' choose one of"),
    ("agent__dropout", -0.1, "config.agent.dropout=-0.1 must be a number in [0.0, 1.0)"),
    ("eval_splits", ((1000, 200), (5,)), "item 1 ((5,)) must have 2 items"),
    ("frame_shape", (64, 64), "config.frame_shape=(64, 64) must have 3 items"),
    ("checkpoint_every_minutes", -1.0,
     "config.checkpoint_every_minutes=-1.0 must be a number >= 0.0"),
    ("eval_on_train_levels", "yes", "config.eval_on_train_levels='yes' must be True or False"),
    ("learning_rate", float("inf"), "config.learning_rate=inf must be a finite number > 0.0"),
    ("max_minutes", float("-inf"), "config.max_minutes=-inf must be a finite number >= 0.0"),
    ("seed", 2**31, "config.seed=2147483648 must be an int in [0, 2147483647]"),
    ("agent__cor", "ff", "config.agent.cor is not a known field (did you mean 'agent.core'?)"),
]


@pytest.mark.parametrize("field, value, words", RL_BAD, ids=[f"{f}={v!r}" for f, v, _ in RL_BAD])
def test_rl_bad_field_is_named(field, value, words):
    with pytest.raises(rl_checks.ConfigError) as info:
        rl_checks.validate_config(_untyped(rl_default(), **{field: value}))
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mode, games, lacking", [
    ("memory", ("maze", "bigfish", "starpilot"), "bigfish, starpilot"),
    ("exploration", ("coinrun", "bigfish"), "bigfish"),
    ("extreme", ("maze",), "maze"),
])
def test_rl_distribution_mode_is_checked_per_game(mode, games, lacking):
    """Issue 24 kind 9: a pair ProcGen lacks is refused with the games that have the mode."""
    config = rl_default()
    config.games, config.distribution_mode = games, mode
    with pytest.raises(rl_checks.ConfigError) as info:
        rl_checks.validate_config(config)
    message = str(info.value)
    assert f"config.distribution_mode={mode!r} is not a mode of {lacking}: ProcGen has it " \
           "for " in message and "'easy' and 'hard'" in message
    config.games = tuple(g for g in games if g not in lacking)
    if config.games:
        rl_checks.validate_config(config)


def test_rl_rules_between_fields_and_devices():
    check = lambda **kw: rl_checks.field_problems(_untyped(rl_default(), **kw))  # noqa: E731
    assert "lists a game twice" in check(games=("maze", "maze"))[0]
    assert ("agent.hidden=128 is not divisible by config.agent.num_heads=6"
            in check(agent__num_heads=6)[0])
    assert check(agent__num_heads=6, agent__core="lstm") == []
    assert "needs num_levels >= 1" in check(eval_splits=((1000, 0),))[0]
    c = rl_default()  # batch 32
    assert rl_checks.device_problems(c, 1) == []
    assert rl_checks.device_problems(_untyped(c, learner_device_ids=(0, 1, 2)), 3) == [
        "config.batch_size=32 must be divisible by the 3 learner devices"]
    assert rl_checks.device_problems(c, 3) == [  # empty learner_device_ids: all devices
        "config.batch_size=32 must be divisible by the 3 learner devices"]
    assert "device(s) [2] do not exist (each process has 2)" in rl_checks.device_problems(
        _untyped(c, actor_device_ids=(2,)), 2)[0]
    # Several processes: ids index each process's own devices; the global batch is split over
    # the processes and over the learner devices of all of them.
    assert rl_checks.device_problems(_untyped(c, actor_device_ids=(1,)), 2, num_processes=2) == []
    assert rl_checks.device_problems(_untyped(c, batch_size=3, learner_device_ids=(1,)), 2, 2) == [
        "config.batch_size=3 (the global batch) must be divisible by the 2 processes"]
    assert rl_checks.device_problems(_untyped(c, batch_size=6), 2, 2) == [
        "config.batch_size=6 must be divisible by the 4 learner devices"]


def test_run_configs_read_back_for_evaluation_pass(tmp_path):
    """A run's config.json read as it is (an installed copy has no defaults file: tuples come
    back as lists) passes, and fields of an older version are accepted there only."""
    for name, (defaults, checks) in STACKS.items():
        save_config(tmp_path / name, defaults())
        assert checks.field_problems(load_config(tmp_path / name), allow_extra=True) == []
    c = _untyped(rl_default(), max_checkpoints=3)
    assert rl_checks.field_problems(c, allow_extra=True) == []
    assert "max_checkpoints is not a known field" in rl_checks.field_problems(c)[0]


def test_unknown_config_key_names_the_closest():
    argv = ["--config", "configs/fewshot/omniglot_smoke.py", "--config.batch_sise=4"]
    assert config_flag_problem(argv) == ("unknown config key 'batch_sise' in "
                                         "configs/fewshot/omniglot_smoke.py: did you mean "
                                         "--config.batch_size?")
    argv = ["--config=configs/rl/ff_cpu.py", "--config.agent.num_head=4", "--config.seed=1"]
    assert "did you mean --config.agent.num_heads?" in config_flag_problem(argv)
    # an RL field given to a few-shot config: no far-fetched suggestion
    assert config_flag_problem(["--config", "configs/fewshot/omniglot_smoke.py",
                                "--config.games=3"]) == (
        "unknown config key 'games' in configs/fewshot/omniglot_smoke.py: the config has no "
        "field 'games' (see configs/fewshot/omniglot_smoke.py)")
    assert (config_flag_problem(["--config", "configs/rl/nope.py"])
            == "--config file configs/rl/nope.py not found")
    assert config_flag_problem(["--config", "configs/rl/ff_cpu.py", "--config.seed=3"]) is None


def test_one_line_keeps_the_exception_of_an_embedded_traceback():
    message = ("flag --config=x.py:a: Error whilst parsing config file:\n\nTraceback (most recent "
               "call last):\n  File \"x.py\", line 3, in get_config\n    return 1\nTypeError: "
               "get_config() takes 0 positional arguments but 1 was given\n")
    assert one_line(message) == ("flag --config=x.py:a: Error whilst parsing config file: "
                                 "TypeError: get_config() takes 0 positional arguments but 1 "
                                 "was given")


# --- the command-line programs (one subprocess each: ~4 s of imports) ---------------------------

# Lines the C++ side of the installed jax CUDA plugin logs on a machine without a GPU, before
# Python runs: environment noise, not the program's output.
NOISE = ("WARNING: All log messages before absl::InitializeLog()", "cudart_stub.cc")


def _cli(*args, cwd=REPO_ROOT):
    """Runs `python -m *args` in `cwd` (from the clone: with the clone on PYTHONPATH; elsewhere:
    the installed package only) and returns its one `error:` line (asserted: exit 2)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    if cwd == REPO_ROOT:
        env["PYTHONPATH"] = str(REPO_ROOT)
    r = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()
             and not any(n in line for n in NOISE)]
    assert r.returncode == 2, r.stderr[-3000:]
    assert ("Traceback" not in r.stderr and len(lines) == 1
            and lines[0].startswith("error: ")), r.stderr[-3000:]
    return lines[0]


@pytest.mark.omniglot
def test_fewshot_train_refuses_bad_configs_before_the_workdir(tmp_path):
    smoke = ["fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             f"--config.data_dir={OMNIGLOT_DIR}"]
    line = _cli(*smoke, "--workdir", str(tmp_path / "a"), "--config.n_way=1000")
    assert "config.n_way=1000 but omniglot val (rotations='all') has 688 classes" in line
    line = _cli(*smoke, "--workdir", str(tmp_path / "b"), "--config.k_shot=0",
                "--config.batch_size=abc")
    assert "--config.batch_size=abc" in line  # a wrong type is caught while parsing the flags
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rl_impala_refuses_bad_configs_before_the_workdir(tmp_path):
    line = _cli("rl.train", "--config", "configs/rl/ff_cpu.py", "--workdir", str(tmp_path / "a"),
                "--config.discount=2.0", "--config.agent.dropout=1.0")
    assert line == ("error: bad config: config.agent.dropout=1.0 must be a number in [0.0, 1.0); "
                    "config.discount=2.0 must be a number in [0.0, 1.0]")
    line = _cli("rl.train", "--config", "configs/rl/ff_cpu.py", "--workdir", str(tmp_path / "b"),
                "--config.batch_sise=4")
    assert "did you mean --config.batch_size?" in line
    line = _cli("rl.impala", "--config", "configs/rl/ff_cpu.py", "--workdir", str(tmp_path / "c"),
                "--config.distribution_mode=memory", "--config.games=('bigfish',)")
    assert "config.distribution_mode='memory' is not a mode of bigfish" in line
    assert not any((tmp_path / d).exists() for d in "abc")


def _run_dir(path, config):
    save_config(path, config)
    return str(path)


@pytest.mark.omniglot
def test_fewshot_evaluators_refuse_a_run_whose_episodes_do_not_fit(tmp_path):
    c = smoke_config()
    c.update(data_dir=str(OMNIGLOT_DIR), k_shot=20)  # 20 shots + the query > 20 drawings
    line = _cli("fewshot.evaluate", "--workdir", _run_dir(tmp_path / "sync", c))
    assert "episodes take 21 images per class" in line and "omniglot test" in line
    c.update(task="sequential", k_shot=1, max_trim=5, sequential_shots=30)
    line = _cli("fewshot.evaluate_sequential", "--workdir", _run_dir(tmp_path / "seq", c),
                "--split=val")
    assert "episodes take 30 images per class (sequential_shots)" in line
    assert (sorted(os.listdir(tmp_path / "sync")) == sorted(os.listdir(tmp_path / "seq"))
            == ["config.json"])


def test_rl_evaluators_refuse_a_bad_run_config_and_bad_flags(tmp_path):
    c = rl_cpu_config()
    c.agent.core = "srwm"
    workdir = _run_dir(tmp_path / "run", c)
    with open(os.path.join(workdir, "config.json")) as f:
        data = json.load(f)
    data["agent"]["num_heads"] = 6  # a hand-edited config.json: 128 hidden units over 6 heads
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(data, f)
    assert "agent.hidden=128 is not divisible" in _cli("rl.evaluate", "--workdir", workdir)
    assert "agent.hidden=128 is not divisible" in _cli("rl.introspect", "--workdir", workdir,
                                                       "--game", "starpilot", "--out",
                                                       str(tmp_path / "inspect"))
    line = _cli("rl.random_baseline", "--games=starpilott", "--episodes=2")
    assert line.startswith("error: flag --games=['starpilott']: every game must be one of")
    assert os.listdir(workdir) == ["config.json"]


@pytest.mark.omniglot
def test_trainers_refuse_before_the_workdir_is_made(tmp_path):
    from fewshot.training import train_and_evaluate as train_fewshot
    from rl.training import train_and_evaluate as train_rl
    c = smoke_config()
    c.update(data_dir=str(OMNIGLOT_DIR), k_shot=20)
    with pytest.raises(fewshot_checks.ConfigError, match="episodes take 21 images per class"):
        train_fewshot(c, str(tmp_path / "fewshot"))
    c = rl_cpu_config()
    c.rmsprop_eps = 0.0
    with pytest.raises(rl_checks.ConfigError,
                       match=r"config.rmsprop_eps=0.0 must be a number > 0.0"):
        train_rl(c, str(tmp_path / "rl"))
    assert os.listdir(tmp_path) == []


def test_configs_load_from_any_directory(tmp_path):
    """A config that imports a sibling (omniglot_smoke.py imports omniglot_srwm_cpu.py) loads
    with the installed package run from another directory, from the clone's configs/ or a copy
    of it; a config whose own code fails, or a bad table1.py argument, is one error line."""
    import shutil
    elsewhere, copy = tmp_path / "elsewhere", tmp_path / "mine" / "configs"
    elsewhere.mkdir()
    shutil.copytree(REPO_ROOT / "configs", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "fewshot" / "broken.py").write_text("import no_such_module_here\n")
    train = ["srwm_jax.fewshot.train", "--workdir", str(tmp_path / "w")]
    for configs in (REPO_ROOT / "configs", copy):
        # The closest-key hint needs the loaded config: the sibling import worked.
        line = _cli(*train, "--config", str(configs / "fewshot" / "omniglot_smoke.py"),
                    "--config.batch_sise=4", cwd=elsewhere)
        assert "did you mean --config.batch_size?" in line, line
    line = _cli(*train, "--config", str(copy / "fewshot" / "broken.py"), cwd=elsewhere)
    assert "could not be loaded" in line and "no_such_module_here" in line, line
    line = _cli(*train, "--config", f"{copy / 'fewshot' / 'table1.py'}:omniglot,srwm,5",
                cwd=elsewhere)
    assert "is not a Table 1 row" in line, line
    assert not (tmp_path / "w").exists()
