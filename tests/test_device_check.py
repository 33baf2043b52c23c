"""benchmarks/device_check.py, the script run first on an accelerator: its plan and budget (fast,
nothing computed) and a quick run of every path on the CPU (slow).

The device comparisons themselves are only meaningful on an accelerator; here the CPU is both
sides, so they exercise the code (and L-BFGS's in-jit loop against the Python loop, and the
band-wise evaluation against the whole image, which are not trivial on one device).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def dc():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import device_check
    finally:
        sys.path.remove(str(BENCHMARKS))
    return device_check


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real weights, cache or settings of the developer's leak into the check's commands."""
    for name in ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


def _groups_in_order(dc, items) -> bool:
    ranks = [dc.GROUPS.index(it.group) for it in items]
    return ranks == sorted(ranks)


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
@pytest.mark.parametrize("accelerator", [True, False], ids=["accelerator", "cpu"])
def test_plan_puts_the_comparisons_first(dc, quick, accelerator):
    items = dc.build_plan(quick, accelerator, torch=True, ffmpeg=None)
    assert [it.name for it in items[:len(dc.COMPARE_KINDS)]] == [f"compare {k}" for k in dc.COMPARE_KINDS]
    assert _groups_in_order(dc, items)
    assert len({it.name for it in items}) == len(items)
    assert all(it.estimate > 0 for it in items)
    names = " ".join(it.name for it in items)
    assert "dream README, empty cache" in names and "dream README, warm" in names
    assert "zoom" in names and "video" in names and "PyTorch" in names and "L-BFGS" in names


def test_plan_marks_what_cannot_run_here(dc):
    items = {it.name: it for it in dc.build_plan(True, False, torch=False, ffmpeg="no ffmpeg here")}
    peer = [it for it in items.values() if it.group == "peer"]
    video = [it for it in items.values() if it.name.startswith("video")]
    assert peer and "torch" in peer[0].unavailable
    assert video and video[0].unavailable == "no ffmpeg here"


def test_budget_skips_what_does_not_fit_and_says_why(dc):
    items = dc.build_plan(False, True, torch=True, ffmpeg=None)
    everything = dc.simulate(items, 1e9)
    assert all(e["run"] for e in everything)
    nothing = dc.simulate(items, 1.0)
    assert not any(e["run"] for e in nothing)
    assert all(e["reason"].startswith("estimated") and "left" in e["reason"] for e in nothing)
    plan = dc.simulate(items, 300)
    # the device-against-CPU comparisons always fit the default budget, and come first
    assert all(e["run"] for e in plan if e["group"] == "compare")
    starts = [e["start_s"] for e in plan]
    assert starts == sorted(starts)
    assert sum(e["estimate_s"] for e in plan if e["run"]) <= 300
    # an item that reuses another's compiled program costs more when that one was skipped
    reusing = [it for it in items if it.reuses]
    assert reusing and all(it.cost(set()) > it.cost({it.reuses}) for it in reusing)


def test_plan_only_writes_the_plan_and_computes_nothing(dc, tmp_path, capsys):
    assert dc.main(["--plan-only", "--assume-backend", "gpu", "--budget", "300", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plan for gpu, budget 300 s" in out and "compare style" in out
    doc = json.loads((tmp_path / "device_check.json").read_text())
    assert doc["plan_only"] and doc["items"] == [] and doc["plan"][0]["name"] == "compare style"
    assert "## Plan (estimates)" in (tmp_path / "device_check.md").read_text()


def test_tiny_budget_skips_every_item_and_says_so(dc, tmp_path, clean_env, capsys):
    assert dc.main(["--quick", "--budget", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "device_check.json").read_text())
    items = doc["items"]
    assert len(items) == len(dc.build_plan(True, False, torch=True, ffmpeg=None))
    assert items[0]["name"] == "compare style" and items[0]["group"] == "compare"
    assert all(r["status"] == "skipped" and r["reason"] for r in items)
    assert any("budget" in r["reason"] for r in items)
    assert [s["name"] for s in doc["skipped"]] == [r["name"] for r in items]
    md = (tmp_path / "device_check.md").read_text()
    assert f"## Skipped ({len(items)})" in md and "SKIPPED: estimated" in md
    assert "SKIPPED" in capsys.readouterr().out


def test_plausibility_flags_short_and_too_fast_runs(dc):
    assert dc.plausibility(0.010, 0.008, 100, 100, 5.0, 1.0) == []
    short = dc.plausibility(0.010, 0.008, 3, 100)
    assert short and "3 of 100" in short[0]
    fast = dc.plausibility(0.001, 0.019, 100, 100)  # neural-style-pt's early return, 1 ms per iteration
    assert fast and "implausibly low" in fast[0]
    assert dc.plausibility(0.01, 0.008, 10, 10, 1.0, 2.0)[0].startswith("loss did not fall")


def test_timing_lines_are_parsed(dc):
    line = "wrote dream.png (400x266, 12.3 s: 4.1 s compiling, 8.2 s dreaming)"
    assert dc.TIMING.findall(line) == [("12.3", "4.1", "8.2", "dreaming")]
    video = "wrote v.mp4 (12 frames at 24 fps, 0.85 s per frame after the first; 31.2 s of it compiling)"
    assert dc.VIDEO_TIMING.findall(video) == [("12", "0.85", "31.2")]


@pytest.mark.slow
def test_quick_run_exercises_every_path(dc, tmp_path, clean_env):
    status = dc.main(["--quick", "--budget", "900", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "device_check.json").read_text())
    items = doc["items"]
    assert status == doc["status"] == 0, [(r["name"], r["status"], r["reason"]) for r in items]
    compare = items[:len(dc.COMPARE_KINDS)]
    assert [r["name"] for r in compare] == [f"compare {k}" for k in dc.COMPARE_KINDS]
    assert all(r["status"] == "ok" and r["rows"] and all(row["status"] == "pass" for row in r["rows"])
               for r in compare)
    bands = compare[dc.COMPARE_KINDS.index("bands")]["data"]["default"]["differences"]
    assert bands["vs_whole_grad"] < 1e-5  # the band-wise path equals the whole image on one device
    by_name = {r["name"]: r for r in items}
    for r in items:
        if r["status"] == "skipped":  # only what this machine lacks (torch, ffmpeg)
            assert "not importable" in r["reason"] or "ffmpeg" in r["reason"], r
        else:
            assert r["status"] == "ok", r
    cold, warm = by_name["dream README, empty cache"]["data"], by_name["dream README, warm"]["data"]
    assert cold["rc"] == 0 and cold["compile_s"] > 0 and "seconds" in cold and "seconds" in warm
    for size, iterations in dc.QUICK["style_cli"]:
        style = by_name[f"style {size} px: stylize vs raw"]["data"]
        assert style["iterations_done"] == iterations and style["ratio"] > 0 and not style["flags"]
    md = (tmp_path / "device_check.md").read_text()
    assert md.index("compare style") < md.index("dream README")
    assert "| # | group | item | measurement | value | target / tolerance | result | took |" in md
