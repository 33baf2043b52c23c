"""The test tiers of ``conftest.py``: a plain ``pytest`` deselects the tests marked slow,
realweights or browser; ``-m`` (even ``-m ''``), ``CI`` or ``JAXDREAM_ALL_TESTS=1`` select all;
a test named by its node id always runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest

TIER_VARIABLES = ("CI", "JAXDREAM_ALL_TESTS", "PYTEST_ADDOPTS")


class FakeItem:
    def __init__(self, nodeid: str, *markers: str) -> None:
        self.nodeid = nodeid
        self.markers = markers

    def get_closest_marker(self, name: str):
        return SimpleNamespace(name=name) if name in self.markers else None


class FakeConfig:
    """What the hooks read of a pytest config: -m, the command line, addopts, the stash."""

    def __init__(self, root: Path, *args: str, markexpr: str = "", verbose: int = 0) -> None:
        self.options = {"markexpr": markexpr, "verbose": verbose}
        self.invocation_params = SimpleNamespace(args=args, dir=root)
        self.rootpath = root
        self.stash = pytest.Stash()
        self.deselected: list[FakeItem] = []
        self.hook = SimpleNamespace(pytest_deselected=lambda items: self.deselected.extend(items))

    def getoption(self, name, default=None):
        return self.options.get(name, default)

    def getini(self, name):
        assert name == "addopts"
        return ["-ra"]


def items() -> list[FakeItem]:
    return [FakeItem("tests/test_a.py::test_quick"), FakeItem("tests/test_a.py::test_long", "slow"),
            FakeItem("tests/test_a.py::test_real[x]", "realweights"),
            FakeItem("tests/test_b.py::test_page", "browser", "slow"), FakeItem("tests/test_b.py::test_other")]


@pytest.fixture
def clean_env(monkeypatch):
    for name in TIER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def select(config: FakeConfig) -> list[str]:
    got = items()
    conftest.pytest_collection_modifyitems(config, got)
    return [i.nodeid.split("::")[1] for i in got]


def test_plain_pytest_runs_the_fast_tier(clean_env, tmp_path):
    config = FakeConfig(tmp_path)
    assert select(config) == ["test_quick", "test_other"]
    assert [i.nodeid.split("::")[1] for i in config.deselected] == ["test_long", "test_real[x]", "test_page"]
    assert conftest.pytest_report_header(config).startswith("jaxdream: fast tier")
    assert "3 slow/realweights/browser tests deselected" in conftest.pytest_report_collectionfinish(config, [])


@pytest.mark.parametrize("name, value, everything", [
    ("CI", "true", True), ("CI", "1", True), ("CI", "yes", True), ("CI", "0", False), ("CI", "false", False),
    ("CI", "False", False), ("CI", "", False), ("JAXDREAM_ALL_TESTS", "1", True), ("JAXDREAM_ALL_TESTS", "0", False)])
def test_ci_and_jaxdream_all_tests_select_every_tier(clean_env, tmp_path, name, value, everything):
    clean_env.setenv(name, value)
    config = FakeConfig(tmp_path)
    assert len(select(config)) == (5 if everything else 2)
    assert (config.deselected == []) == everything
    tier = "jaxdream: all tiers" if everything else "jaxdream: fast tier"
    assert conftest.pytest_report_header(config).startswith(tier)


@pytest.mark.parametrize("args, markexpr", [(("-m", ""), ""), (("-m", "slow"), "slow"), (("-mslow",), "slow"),
                                            (("--markexpr=",), ""), ((), "not slow")])
def test_any_m_selects_every_tier_for_pytest_to_filter(clean_env, tmp_path, args, markexpr):
    config = FakeConfig(tmp_path, *args, markexpr=markexpr)
    assert len(select(config)) == 5 and config.deselected == []
    assert conftest.pytest_report_header(config) == "jaxdream: all tiers (-m given)"
    assert conftest.pytest_report_collectionfinish(config, []) == []
    quiet = FakeConfig(tmp_path, *args, markexpr=markexpr, verbose=-1)  # no header: the tier is said here
    assert conftest.pytest_report_collectionfinish(quiet, []) == "jaxdream: all tiers (-m given)"


def test_m_in_pytest_addopts_counts(clean_env, tmp_path):
    clean_env.setenv("PYTEST_ADDOPTS", "-q -m ''")
    assert len(select(FakeConfig(tmp_path))) == 5


def test_a_test_named_by_its_id_runs_in_the_fast_tier(clean_env, tmp_path):
    (tmp_path / "tests").mkdir()
    config = FakeConfig(tmp_path, "tests/test_a.py::test_long", "tests/test_a.py::test_real")
    assert select(config) == ["test_quick", "test_long", "test_real[x]", "test_other"]
    inside = FakeConfig(tmp_path, "test_b.py::test_page")
    inside.invocation_params.dir = tmp_path / "tests"  # run from tests/: ids relative to there
    assert select(inside) == ["test_quick", "test_page", "test_other"]


def test_the_real_hook_in_a_pytest_run(tmp_path):
    """End to end, in a pytest subprocess whose conftest is this suite's: the fast tier, then all."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow\n    realweights\n    browser\n")
    (tmp_path / "conftest.py").write_text(
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(Path(conftest.__file__).parent)!r})\n"
        f"spec = importlib.util.spec_from_file_location('jaxdream_tiers', {conftest.__file__!r})\n"
        "tiers = sys.modules['jaxdream_tiers'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tiers)\n"
        "pytest_collection_modifyitems = tiers.pytest_collection_modifyitems\n"
        "pytest_report_header = tiers.pytest_report_header\n"
        "pytest_report_collectionfinish = tiers.pytest_report_collectionfinish\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_fast():\n    pass\n\n"
        "@pytest.mark.slow\ndef test_slow():\n    pass\n\n"
        "@pytest.mark.parametrize('x', [1, pytest.param(2, marks=pytest.mark.realweights)])\n"
        "def test_param(x):\n    pass\n\n"
        "@pytest.mark.browser\nclass TestPage:\n    def test_page(self):\n        pass\n")
    env = {k: v for k, v in os.environ.items() if k not in TIER_VARIABLES}

    def run(*args: str, **extra: str) -> str:
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                                cwd=tmp_path, env=env | extra, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    fast = run("-q")
    assert "jaxdream: fast tier (3 slow/realweights/browser tests deselected;" in fast
    assert "2 passed, 3 deselected" in fast
    assert "5 passed" in run("-q", "-m", "")
    everything = run("-v", CI="true")
    assert "jaxdream: all tiers (CI is set)" in everything and "5 passed" in everything
