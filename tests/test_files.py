"""Atomic writes: a file or folder appears whole, or the old one stays and nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinydiff.files import json_bytes, parse_step_name, step_name, write_atomic, write_files_atomic, write_folder_atomic


def test_write_atomic_writes_and_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.bin", b"hello")
    assert (tmp_path / "a.bin").read_bytes() == b"hello"
    assert os.listdir(tmp_path) == ["a.bin"]
    write_atomic(str(tmp_path / "a.bin"), b"second")  # a str path, replacing the file
    assert (tmp_path / "a.bin").read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_write_atomic_renames_a_sibling_temp_file_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    seen: list[tuple[str, str, bytes, bytes]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        # at the moment of the rename, the temp file is complete and the target still holds the old data
        seen.append((str(src), str(dst), Path(src).read_bytes(), Path(dst).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(target, b"new data")
    assert len(seen) == 1
    src, dst, src_bytes, dst_bytes = seen[0]
    assert Path(src).parent == tmp_path, "the temp file must be in the same folder, so the rename is atomic"
    assert Path(src).name != "data.bin"
    assert Path(dst) == target
    assert src_bytes == b"new data" and dst_bytes == b"old"
    assert target.read_bytes() == b"new data"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_write_atomic_failure_keeps_old_file_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_write_atomic_into_missing_folder_fails_without_creating_it(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "x.bin", b"data")
    assert os.listdir(tmp_path) == []



def test_a_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model"
    write_folder_atomic(target, {"a.txt": b"1", "b.txt": b"2"})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"a.txt": b"1", "b.txt": b"2"}
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file: a full disk
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        write_folder_atomic(target, {"a.txt": b"new", "b.txt": b"new"})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"a.txt": b"1", "b.txt": b"2"}
    assert os.listdir(tmp_path) == ["model"], "no temporary folder left"


def test_files_added_to_a_folder_appear_all_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keep.txt").write_bytes(b"mine")
    write_files_atomic(tmp_path, {"0000.png": b"a", "0001.png": b"b"})
    assert sorted(os.listdir(tmp_path)) == ["0000.png", "0001.png", "keep.txt"]
    real_fdopen = os.fdopen
    opened = []

    def full_disk(fd: int, mode: str = "r"):
        opened.append(fd)
        if len(opened) == 3:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, mode)

    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_files_atomic(tmp_path, {"0002.png": b"c", "0003.png": b"d", "0004.png": b"e"})
    assert sorted(os.listdir(tmp_path)) == ["0000.png", "0001.png", "keep.txt"], "none of the three appeared"


def test_written_files_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", b"x")
        write_folder_atomic(tmp_path / "d", {"g": b"y"})
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_json_is_indented_utf8_with_a_final_newline() -> None:
    assert json_bytes({"word": "naïve", "n": [1]}) == '{\n  "word": "naïve",\n  "n": [\n    1\n  ]\n}\n'.encode()


def test_step_names_round_trip() -> None:
    assert step_name(10) == "step-000010" and parse_step_name("step-000010") == 10
    assert step_name(1_234_567) == "step-1234567" and parse_step_name(step_name(1_234_567)) == 1_234_567
    for other in ("step-", "step-12a", "x-000010", ".tmp-step-000010-ab", "step-000010.png"):
        assert parse_step_name(other) is None
