import pytest

from nas_attn.atomic import atomic_save, atomic_write


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "best.pt"
    atomic_write(target, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
