"""jaxdream's XLA flags: added only where measured, never over the user's own."""

from __future__ import annotations

import pytest

from jaxdream.runtime import xla_flags

FLAG = xla_flags.CPU_FLAGS[0][0]


@pytest.fixture
def release(monkeypatch):
    def set_release(value):
        monkeypatch.setattr(xla_flags, "_jaxlib_release", lambda: value)
    return set_release


def test_added_for_a_measured_jaxlib(release):
    release("0.10")
    env = {}
    assert xla_flags.apply(env) == [FLAG]
    assert env["XLA_FLAGS"] == FLAG


def test_appended_to_the_users_other_flags(release):
    release("0.10")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    xla_flags.apply(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {FLAG}"


def test_the_users_own_setting_wins(release):
    release("0.10")
    env = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"}
    assert xla_flags.apply(env) == []
    assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"


@pytest.mark.parametrize("value", ["0.4", "0.11", None])
def test_unmeasured_or_missing_jaxlib_gets_nothing(release, value):
    # XLA aborts the process on a flag it does not know: only measured releases get it
    release(value)
    env = {}
    assert xla_flags.apply(env) == []
    assert "XLA_FLAGS" not in env


def test_keep_switch(release):
    release("0.10")
    env = {"JAXDREAM_KEEP_XLA_FLAGS": "1"}
    assert xla_flags.apply(env) == []
    assert "XLA_FLAGS" not in env


def test_the_installed_jaxlib_accepts_what_jaxdream_sets(tmp_path):
    # a fresh process that imports jaxdream and starts the CPU backend must not be stopped by XLA
    import subprocess
    import sys
    code = "import jaxdream, jax, os; print(float(jax.numpy.ones(3).sum()), os.environ.get('XLA_FLAGS', ''))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3.0")
