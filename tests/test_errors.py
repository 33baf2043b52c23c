"""An unexpected exception in a command (a bug) ends in one line that names the log file
holding its traceback, with exit status 1: never a traceback cut short when the process ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdream.jobs import command


def test_a_bug_is_one_line_and_a_log_file(jaxdream_home, capsys):
    args = command.parse(["devices"])

    def broken(args, **hooks):
        raise RuntimeError("boom\nsecond line")
    args.func = broken
    assert command.run(args) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdream: error: unexpected RuntimeError: boom (a bug")
    log = Path(lines[0].split("the traceback is in ")[1].rstrip(")"))
    assert log.parent == jaxdream_home / "logs"
    text = log.read_text()
    assert "Traceback" in text and "second line" in text and "broken" in text


def test_without_a_writable_home_the_traceback_goes_to_stderr(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXDREAM_HOME", str(blocker / "home"))  # under a file: nothing can be created
    args = command.parse(["devices"])
    args.func = lambda args, **hooks: 1 / 0
    assert command.run(args) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" in err and "its traceback is above" in err


def test_a_coordinator_that_is_not_host_port_is_one_clear_line():
    import pytest

    from jaxdream.errors import SettingsError
    from jaxdream.runtime import parallel
    for bad in ("notahostport", ":1234", "host:", "host:99999", "host:port"):
        with pytest.raises(SettingsError, match="expected HOST:PORT"):
            parallel.initialize_distributed(bad, 2, 0)


def test_a_guide_too_large_is_named_by_its_own_option(jaxdream_home, tmp_path, capsys):
    """``--guide-size 9000`` beyond the pixel ceiling names --guide-size, not --size."""
    from jaxdream import media
    from jaxdream.cli.main import main
    photo, guide = tmp_path / "photo.png", tmp_path / "guide.png"
    media.save_image(photo, np.full((20, 30, 3), 100.0, np.float32))
    media.save_image(guide, np.full((10, 10, 3), 100.0, np.float32))  # 9000 x 9000 px: beyond the ceiling
    rc = main(["dream", str(photo), "--guide", str(guide), "--guide-size", "9000", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1 and "--guide-size 9000" in err and "at --size" not in err, err


def test_weights_convert_into_an_unwritable_cache_fails(googlenet_caffemodel, tmp_path, monkeypatch, capsys):
    """`weights convert` exists to write the cache: when it cannot, exit 1 and say where (it
    printed "converted ... -> ...npz" and exited 0 with no file)."""
    from jaxdream.cli.main import main
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "file" / "home"))
    rc = main(["weights", "convert", "googlenet", str(googlenet_caffemodel.path)])
    out, err = capsys.readouterr()
    assert rc == 1 and "could not write the converted weights" in err and "converted" not in out


def test_a_corrupt_cached_provenance_file_is_named(googlenet_caffemodel, jaxdream_home, recwarn):
    from jaxdream.nets.network import param_shapes
    from jaxdream.weights import get_info, store
    info = get_info("googlenet")
    store.convert_and_cache(info, Path(googlenet_caffemodel.path), param_shapes("googlenet"))
    meta = store.converted_path(info).with_suffix(".json")
    meta.write_text("{not json")
    import pytest

    from jaxdream.errors import WeightsError
    with pytest.raises(WeightsError):  # nothing else to convert from here: the warning came first
        store.load_flat("googlenet", param_shapes("googlenet"), allow_download=False)
    messages = [str(w.message) for w in recwarn]
    assert any("ignoring the cached conversion" in m and str(meta) in m for m in messages), messages


def test_style_batch_skips_only_results_of_the_same_run(vgg_h5, jaxdream_home, tmp_path, capsys):
    """A rerun skips results whose PNG records the same settings and files; another
    --style-weight redoes them; a PNG of the right name that jaxdream did not make (the photos
    themselves) is not a result; the input folder is refused as the output folder."""
    from jaxdream import media
    from jaxdream.cli.main import main
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        media.save_image(photos / f"{name}.png", rng.uniform(0, 255, (24, 32, 3)).astype(np.float32))
    media.save_image(tmp_path / "style.png", rng.uniform(0, 255, (24, 24, 3)).astype(np.float32))
    base = ["style", str(photos), "--style", str(tmp_path / "style.png"), "--size", "32", "--iterations", "1",
            "--weights", str(vgg_h5), "--quiet"]
    assert main([*base, "-o", f"{photos}/"]) == 1
    assert "holds the content images" in capsys.readouterr().err
    out.mkdir()
    media.save_image(out / "a.png", np.zeros((24, 32, 3), np.float32))  # not a result of this run
    assert main([*base, "-o", f"{out}/"]) == 0
    assert "done already" not in capsys.readouterr().out
    assert main([*base, "-o", f"{out}/"]) == 0
    assert "2 of 2 content images are done already" in capsys.readouterr().out
    assert main([*base, "--style-weight", "1000", "-o", f"{out}/"]) == 0
    assert "done already" not in capsys.readouterr().out
    assert media.read_settings(out / "a.png")["style_weight"] == [1000.0]


def test_warmup_refuses_what_dream_refuses_and_an_unwritable_cache(jaxdream_home, tmp_path, capsys, monkeypatch):
    """warmup compiled 10000x10000 programs that dream refuses, said "ready" with an unwritable
    cache, and crashed its worker on --aspects inf:1."""
    from jaxdream.cli.main import main
    assert main(["warmup", "--size", "10000", "--aspects", "1:1", "--dry-run"]) == 1
    assert "10000x10000" in capsys.readouterr().err
    assert main(["warmup", "--size", "64", "--aspects", "inf:1", "--dry-run"]) == 1
    assert "aspect ratio is written like 4:3" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "file" / "home"))
    assert main(["warmup", "--size", "64", "--aspects", "1:1", "--octaves", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot write the compile cache" in err and "ready" not in err


def test_a_full_disk_is_caught_before_any_work(jaxdream_home, tmp_path, capsys, monkeypatch):
    """A full folder still creates empty files, so the write test passed and dream/style computed
    everything before "No space left on device"; now the free space is checked first, with an
    estimate of what the run writes (--dry-run included)."""
    import shutil
    from collections import namedtuple

    from jaxdream import media
    from jaxdream.cli.main import main
    from jaxdream.media import images
    photo = tmp_path / "photo.png"
    media.save_image(photo, np.full((40, 40, 3), 90.0, np.float32))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(images.shutil, "disk_usage", lambda p: usage(1 << 40, 1 << 40, 100 << 10))
    assert main(["dream", str(photo), "-o", str(tmp_path / "d.png"), "--dry-run"]) == 1
    assert "no space left" in capsys.readouterr().err
    monkeypatch.setattr(images.shutil, "disk_usage", lambda p: usage(1 << 40, 1 << 40, 2 << 20))
    assert main(["dream", str(photo), "--size", "1000", "-o", str(tmp_path / "d.png"), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "the dream writes about 3 MB and 2 MB is free" in err, err
    assert main(["zoom", str(photo), "--size", "256", "--frames", "100", "-o", str(tmp_path / "z.gif"), "--dry-run"]) == 1
    assert "a zoom of 100 frames writes about" in capsys.readouterr().err
    assert main(["style", str(photo), "--style", str(photo), "--size", "1000", "-o", str(tmp_path / "s.png"),
                 "--dry-run"]) == 1
    assert "style transfer writes about 3 MB" in capsys.readouterr().err
    monkeypatch.setattr(images.shutil, "disk_usage", shutil.disk_usage)
    assert main(["dream", str(photo), "-o", str(tmp_path / "d.png"), "--dry-run"]) == 0


def test_a_cluster_that_does_not_form_ends_in_one_line_within_the_timeout(jaxdream_home, tmp_path):
    """Process 0 of 2 whose partner never comes: one line and exit 1 after the timeout, not
    XLA's abort with a C++ stack (exit 134) after about a minute."""
    import os
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAXDREAM_CLUSTER_TIMEOUT_S": "3", "JAXDREAM_HOME": str(jaxdream_home)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "jaxdream.cli.main", "devices", "--coordinator", f"127.0.0.1:{port}",
                          "--num-processes", "2", "--process-id", "0"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"jaxdream: error: the JAX cluster at 127.0.0.1:{port} did not form within 3 s")
    assert time.monotonic() - t0 < 40


def test_a_bad_cluster_timeout_is_one_line(monkeypatch):
    import pytest

    from jaxdream.errors import SettingsError
    from jaxdream.runtime import parallel
    for bad in ("soon", "0", "-5", "nan", "1e9"):
        monkeypatch.setenv("JAXDREAM_CLUSTER_TIMEOUT_S", bad)
        with pytest.raises(SettingsError, match="JAXDREAM_CLUSTER_TIMEOUT_S"):
            parallel.cluster_timeout()
