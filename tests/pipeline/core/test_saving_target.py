"""Saving parameters, file names and the checks that confine writes to DataRoots (DECTRIS file writer naming)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detpipe.pipeline.core.errors import ConfigError, PathOutsideDataRoots, TargetFileExists
from detpipe.pipeline.core.saving_target import (
    OverwritePolicy,
    SavingParams,
    check_directory,
    claim_series_files,
    series_file_names,
)


def params(root: Path, **extra: object) -> SavingParams:
    return SavingParams(directory=root / "run", data_roots=(root,), **extra)  # type: ignore[arg-type]


def test_from_mapping_accepts_strings_as_a_yaml_file_gives_them(tmp_path: Path) -> None:
    got = SavingParams.from_mapping({
        "directory": str(tmp_path / "a"), "prefix": "lyso_$id", "frames_per_file": 50,
        "overwrite_policy": "Overwrite", "data_roots": [str(tmp_path)], "instrument_name": "ID23",
    })
    assert got == SavingParams(directory=tmp_path / "a", prefix="lyso_$id", frames_per_file=50,
                               overwrite_policy=OverwritePolicy.OVERWRITE, data_roots=(tmp_path,),
                               instrument_name="ID23")
    assert SavingParams.from_mapping({"directory": "/data"}).overwrite_policy is OverwritePolicy.ABORT


def test_from_mapping_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        SavingParams.from_mapping({
            "directory": "relative/dir", "prefix": "a/b", "frames_per_file": 0,
            "overwrite_policy": "append", "colour": "red",
        })
    problems = caught.value.problems
    assert any("colour" in p for p in problems)
    assert any("overwrite_policy" in p and "append" in p for p in problems)
    with pytest.raises(ConfigError) as caught:
        SavingParams.from_mapping({"directory": "relative/dir", "prefix": "a/b", "frames_per_file": 0})
    assert len(caught.value.problems) == 3, caught.value.problems


@pytest.mark.parametrize(
    ("raw", "word"),
    [({"frames_per_file": "10"}, "frames_per_file"), ({"frames_per_file": True}, "frames_per_file"),
     ({"prefix": ""}, "prefix"), ({"data_roots": "/data"}, "data_roots"), ({"data_roots": ["rel"]}, "rel")],
)
def test_from_mapping_rejects_bad_values(raw: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        SavingParams.from_mapping({"directory": "/data", **raw})


@pytest.mark.parametrize(
    ("raw", "words"),
    [({"directory": "/data/a\x00b"}, "control characters"), ({"directory": "/data/new\nline"}, "control characters"),
     ({"prefix": "tab\there"}, "control characters"), ({"prefix": "nul\x00"}, "control characters"),
     ({"directory": "/data/" + "d" * 300}, "longer than 255 bytes"), ({"prefix": "p" * 300}, "too long")],
)
def test_names_a_file_system_would_refuse_or_mangle_are_refused_with_a_reason(raw: dict[str, object],
                                                                             words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        SavingParams.from_mapping({"directory": "/data", **raw})
    assert len(caught.value.problems) == 1


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        SavingParams(directory=Path("rel"))


def test_file_names_follow_the_dectris_pattern(tmp_path: Path) -> None:
    files = series_file_names(params(tmp_path, prefix="lyso_$id_x"), 42)
    assert files.master == tmp_path / "run" / "lyso_42_x_master.h5"
    assert files.data_file(1) == tmp_path / "run" / "lyso_42_x_data_000001.h5"
    assert files.data_file(123456).name == "lyso_42_x_data_123456.h5"


def test_check_directory_returns_the_resolved_path_below_a_root(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    assert check_directory(tmp_path / "root" / "a" / ".." / "b", [tmp_path / "root"]) == (tmp_path / "root" / "b")


@pytest.mark.parametrize("escape", ["../outside", "a/../../outside", "link/x", "rel"])
def test_check_directory_refuses_paths_that_resolve_outside_every_root(tmp_path: Path, escape: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    target = Path(escape) if escape == "rel" else root / escape
    with pytest.raises(PathOutsideDataRoots, match="pick a directory under one"):
        check_directory(target, [root])


def test_no_data_roots_means_nothing_may_be_written(tmp_path: Path) -> None:
    with pytest.raises(PathOutsideDataRoots):
        check_directory(tmp_path, [])


def test_claim_creates_the_missing_directory_inside_its_root(tmp_path: Path) -> None:
    files = claim_series_files(SavingParams(directory=tmp_path / "a" / "b", data_roots=(tmp_path,)), 3)
    assert (tmp_path / "a" / "b").is_dir()
    assert files.master == tmp_path / "a" / "b" / "series_3_master.h5"
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the writability probe leaves nothing behind


def test_claim_refuses_a_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="DataRoots entry"):
        claim_series_files(SavingParams(directory=tmp_path / "gone" / "x", data_roots=(tmp_path / "gone",)), 1)
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("existing", ["series_7_master.h5", "series_7_data_000003.h5"])
def test_abort_policy_refuses_an_existing_master_or_data_file(tmp_path: Path, existing: str) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / existing).write_bytes(b"old")
    with pytest.raises(TargetFileExists, match=f"{existing} already exists .* change saving_prefix"):
        claim_series_files(params(tmp_path), 7)
    assert (tmp_path / "run" / existing).read_bytes() == b"old"


def test_overwrite_policy_removes_the_old_file_set_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ["series_7_master.h5", "series_7_data_000001.h5", "series_7_data_000009.h5",
                 "series_70_master.h5", "series_7_data_1.h5", "notes.txt"]:
        (run / name).write_bytes(b"old")
    claim_series_files(params(tmp_path, overwrite_policy=OverwritePolicy.OVERWRITE), 7)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "series_70_master.h5", "series_7_data_1.h5"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_unwritable_directory_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o555)
    with pytest.raises(PermissionError, match="not writable .* choose another saving_directory"):
        claim_series_files(params(tmp_path), 1)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, which refuses new files even to root")
def test_directory_that_refuses_new_files_is_refused_even_for_root() -> None:
    with pytest.raises(PermissionError, match="/sys/kernel is not writable"):
        claim_series_files(SavingParams(directory=Path("/sys/kernel"), data_roots=(Path("/sys"),)), 1)
