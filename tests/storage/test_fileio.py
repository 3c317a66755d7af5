"""The fileio driver on this machine's filesystem: direct I/O, the page cache measured."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import FAST

from storage.helpers import override, trials


def test_direct_and_buffered_reads_say_what_they_measured(workdir, tmp_path):
    proc = workdir.run(
        "-m",
        "service=fileio",
        f"service.dir={tmp_path / 'io'}",
        "service.file_size_mb=16",
        "service.block_size_kb=64",
        "service.direct=true,false",
        "service.pattern=rand",
        "concurrency=2",
        *FAST,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    done = trials(workdir)
    assert len(done) == 2
    for meta, m in done:
        direct = override(meta, "service.direct").lower() == "true"
        assert meta["status"] == "finished" and m["errors"]["count"] == 0
        assert m["throughput"]["unit"] == "MiB_per_s" and m["throughput"]["value"] > 0
        assert m["rates"]["requests_per_s"] == pytest.approx(m["throughput"]["value"] * 16)
        x = m["extra"]
        assert x["fileio.direct"] == (1.0 if direct else 0.0) and x["fileio.file_mb"] == 16
        if direct:
            assert "direct I/O" in m["notes"] and "uncached" in m["notes"]
        else:
            # drop_cache evicted the file before the window, and the cache was measured
            assert x["fileio.cached_fraction_start"] < 0.5, x
            assert "buffered reads" in m["notes"] and "cached" in m["notes"]
    assert not list((tmp_path / "io").iterdir()), "the temporary files are removed"


def test_writes_with_fsync_at_the_end_report_it_and_a_named_file_is_kept(workdir, tmp_path):
    proc = workdir.run(
        "service=fileio",
        f"service.dir={tmp_path}",
        "service.file_name=bench.dat",
        "service.op=write",
        "service.fsync=end",
        "service.file_size_mb=4",
        "service.exceed_page_cache=true",
        "service.page_cache_budget_mb=8",  # the file becomes 1.25 x 8 MiB
        *FAST,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    ((_, m),) = trials(workdir)
    assert m["extra"]["fileio.file_mb"] == 10 and m["extra"]["fileio.end_fsync_s"] >= 0
    assert "land in the page cache" in m["notes"] and "final fsync" in m["notes"]
    assert (tmp_path / "bench.dat").stat().st_size == 10 << 20


def test_bad_fileio_settings_are_refused(workdir):
    from benchflow.config import ConfigError, compose_trials

    with pytest.raises(ConfigError, match="multiple of 4 KiB"):
        compose_trials(["service=fileio", "service.direct=true", "service.block_size_kb=3"], False)
    with pytest.raises(ConfigError, match="plain file name"):
        compose_trials(["service=fileio", "service.file_name=a/b"], False)
    with pytest.raises(ConfigError, match="must not exceed file_size_mb"):
        compose_trials(
            ["service=fileio", "service.file_size_mb=1", "service.block_size_kb=2048"], False
        )


def test_direct_io_refused_by_the_filesystem_is_a_clear_error_stand_in(tmp_path, monkeypatch):
    """Stand-in: no filesystem here refuses O_DIRECT (ext4 and tmpfs both accept it on
    this kernel), so ``os.open`` is made to fail as such a filesystem's does (EINVAL)."""
    from drivers.base import DriverError, RunSettings, TrialContext
    from drivers.storage.fileio import FileIODriver, FileIOSettings, filesystem_of

    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_open(path, flags, *args)

    ctx = TrialContext("f" * 32, RunSettings(1, 1, 1, 0, None), tmp_path, tmp_path)
    s = FileIOSettings(
        name="fileio", driver="fileio", dir=str(tmp_path), file_size_mb=1, direct=True
    )
    drv = FileIODriver(s, ctx)
    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(DriverError) as err:
        drv.setup()
    assert err.value.error_class == "direct_io_unsupported"
    assert f"refused by the {filesystem_of(tmp_path)} filesystem" in str(err.value)
    assert "direct=false" in str(err.value)
    drv.teardown()
