"""User ids and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from easyphoto import InvalidUserIdError
from easyphoto.store import atomic_dir, user_dir, validate_user_id, write_json_atomic


@pytest.mark.parametrize("good", ["alice", "Bob_2", "a", "x.y-z", "0" * 64])
def test_valid_user_ids(good: str) -> None:
    assert validate_user_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc",
        "..",
        ".",
        "a/b",
        "a\\b",
        "/abs",
        "ümlaut",
        "a b",
        "-lead",
        "x" * 65,
        "none",
        "trail.",
        "a..b",
        "nul",
        "\x00x",
    ],
)
def test_invalid_user_ids(bad: str) -> None:
    with pytest.raises(InvalidUserIdError) as info:
        validate_user_id(bad)
    assert "invalid user id" in str(info.value)


def test_user_dir_is_inside_home(tmp_path: Path) -> None:
    assert user_dir("alice", tmp_path) == tmp_path / "users" / "alice"
    with pytest.raises(InvalidUserIdError):
        user_dir("../../etc", tmp_path)


def test_atomic_json_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})  # not serialisable: fails mid-way
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_atomic_dir_replaces_whole_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    with atomic_dir(target) as stage:
        (stage / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(target) as stage:
        (stage / "b.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # untouched
    with atomic_dir(target) as stage:
        (stage / "c.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced cleanly
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no staging or old folders left
