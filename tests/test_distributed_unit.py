"""srwm_jax.training.distributed and the process-local batch helpers, in one process.

(The multi-process behaviour itself: test_fewshot_distributed.py, test_rl_distributed.py.)
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from srwm_jax.training import distributed
from srwm_jax.training.mesh import DataParallel


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2, process_id=None, coordinator_address="127.0.0.1:1"), "process_id=None"),
    (dict(num_processes=2, process_id=2, coordinator_address="127.0.0.1:1"), "process_id=2"),
    (dict(num_processes=2, process_id=0), "coordinator_address"),
    (dict(process_id=1), "without num_processes"),
])
def test_bad_settings_give_one_clear_error(kwargs, message, monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
                 distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.initialize(**kwargs)


def test_single_process_needs_no_runtime(monkeypatch):
    monkeypatch.delenv(distributed.ENV_NUM_PROCESSES, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "1")
    assert distributed.initialize() is False
    assert distributed.is_main_process()
    assert distributed.agree({"stop": True, "save": False}) == {"stop": True, "save": False}


def test_checksum_is_bit_exact():
    tree = {"a": np.arange(6, dtype=np.float32), "b": jax.numpy.ones((2, 3))}
    crc = distributed.params_checksum(tree)
    assert crc == distributed.check_identical(tree)
    changed = {"a": tree["a"].copy(), "b": tree["b"]}
    changed["a"][3] = np.nextafter(changed["a"][3], np.float32(10))  # one ulp
    assert distributed.params_checksum(changed) != crc


def test_device_indices_and_process_rows_in_one_process():
    devices = jax.devices()
    assert distributed.devices_by_local_index(()) == devices
    assert distributed.devices_by_local_index((0,)) == devices[:1]
    with pytest.raises(ValueError, match="out of range"):
        distributed.devices_by_local_index((len(devices),))
    mesh = DataParallel()
    n = mesh.num_devices
    assert mesh.process_rows(4 * n) == slice(0, 4 * n)
    batch = {"x": np.arange(4 * n * 3, dtype=np.float32).reshape(4 * n, 3)}
    np.testing.assert_array_equal(np.asarray(mesh.put_process_batch(batch)["x"]), batch["x"])


def test_cli_reports_a_bad_setting_in_one_line(tmp_path, repo_root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_PLATFORMS"}
    r = subprocess.run([sys.executable, "-m", "fewshot.train", "--config",
                        "configs/fewshot/omniglot_smoke.py", "--workdir", str(tmp_path),
                        "--num_processes=2", "--process_id=0"], cwd=repo_root,
                       env=dict(env, PYTHONPATH=str(repo_root)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: num_processes > 1 needs --coordinator_address" in r.stderr


def test_cpu_device_count_divides_each_process_share(monkeypatch):
    """cpu_devices=0 picks per-core devices dividing batch_size / processes, so the global batch
    splits over processes x devices (16 cores, batch 24, 2 processes: 12 each -> 12 devices)."""
    from types import SimpleNamespace

    from fewshot.training import configure_cpu_devices
    chosen = []
    monkeypatch.setattr(jax.config, "update", lambda name, n: chosen.append(n))
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setenv("XLA_FLAGS", "")
    config = SimpleNamespace(cpu_devices=0, batch_size=24)
    configure_cpu_devices(config, num_processes=2)
    configure_cpu_devices(config, num_processes=1)
    assert chosen == [12, 12]
    config.batch_size = 20
    configure_cpu_devices(config, num_processes=2)  # 10 each: 10 devices (not 16, not 20)
    configure_cpu_devices(config, num_processes=4)  # 5 each: 5 devices
    assert chosen[2:] == [10, 5]
    flag_values = SimpleNamespace(num_processes=None)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "3")
    assert distributed.requested_processes(flag_values) == 3
    assert distributed.requested_processes(SimpleNamespace(num_processes=2)) == 2
