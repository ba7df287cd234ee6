"""archive: deterministic packing, content addresses, and unpacking that refuses to escape."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from gpufleet.errors import InvalidInput
from gpufleet.inference import archive


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    (root / "predict.py").write_text("print('hi')\n")
    (root / "sub" / "data.bin").write_bytes(b"\x00\x01" * 100)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    for skipped in (".git", "__pycache__", ".venv"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("x")
    (root / "predict.pyc").write_bytes(b"junk")
    return root


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue())


def test_pack_is_deterministic_and_skips_caches(tmp_path: Path) -> None:
    src = _model(tmp_path / "m")
    first = archive.pack(src)
    os.utime(src / "predict.py", (1, 1))  # times do not count
    assert archive.pack(src) == first
    names = sorted(archive.read_files(first, suffixes=("",)))
    assert names == ["cog.yaml", "predict.py", "run.sh", "sub/data.bin"]
    (src / "predict.py").write_text("print('changed')\n")
    assert archive.pack(src) != first


def test_unpack_round_trip_keeps_modes(tmp_path: Path) -> None:
    src = _model(tmp_path / "m")
    dest = tmp_path / "out"
    archive.unpack(archive.pack(src), dest)
    assert (dest / "sub" / "data.bin").read_bytes() == b"\x00\x01" * 100
    assert (dest / "run.sh").stat().st_mode & 0o111
    assert not (dest / ".git").exists()


def test_digest_depends_on_the_model_name_and_the_bytes() -> None:
    d = archive.version_digest("acme", "echo", b"abc")
    assert len(d) == 64 and d == archive.version_digest("acme", "echo", b"abc")
    assert d != archive.version_digest("acme", "echo2", b"abc")
    assert d != archive.version_digest("acme", "echo", b"abd")


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../escape", "a/../../escape", "a/../b"],
)
def test_unpack_refuses_paths_leaving_dest(tmp_path: Path, name: str) -> None:
    data = _tar([(tarfile.TarInfo(name), b"x")])
    with pytest.raises(InvalidInput, match="archive member"):
        archive.unpack(data, tmp_path / "d")
    assert not (tmp_path / "escape").exists()


def test_unpack_refuses_links_leaving_dest_and_writes_through_links(tmp_path: Path) -> None:
    out = tarfile.TarInfo("evil")
    out.type, out.linkname = tarfile.SYMTYPE, "../../outside"
    with pytest.raises(InvalidInput, match="link"):
        archive.unpack(_tar([(out, None)]), tmp_path / "d1")
    absolute = tarfile.TarInfo("abs")
    absolute.type, absolute.linkname = tarfile.SYMTYPE, "/etc"
    with pytest.raises(InvalidInput, match="link"):
        archive.unpack(_tar([(absolute, None)]), tmp_path / "d2")
    # a link inside, then a file written over the link's own name
    inside = tarfile.TarInfo("l")
    inside.type, inside.linkname = tarfile.SYMTYPE, "target"
    with pytest.raises(InvalidInput, match="through a link"):
        archive.unpack(_tar([(inside, None), (tarfile.TarInfo("l"), b"x")]), tmp_path / "d3")


def test_unpack_refuses_devices_and_hard_links(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(InvalidInput, match="not a regular file"):
        archive.unpack(_tar([(dev, None)]), tmp_path / "d")
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    with pytest.raises(InvalidInput, match="not a regular file"):
        archive.unpack(_tar([(hard, None)]), tmp_path / "d")


def test_unpack_caps_the_unpacked_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 1000)
    data = _tar([(tarfile.TarInfo("a"), b"0" * 600), (tarfile.TarInfo("b"), b"0" * 600)])
    with pytest.raises(InvalidInput, match="more than"):
        archive.unpack(data, tmp_path / "d")
    with pytest.raises(InvalidInput, match="more than"):
        archive.read_files(data, suffixes=("",))


def test_pack_caps_the_size_and_refuses_links_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _model(tmp_path / "m")
    (src / "big").write_bytes(os.urandom(3000))
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 2000)
    with pytest.raises(InvalidInput, match="MiB"):
        archive.pack(src)
    monkeypatch.undo()
    (src / "out").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="outside the model directory"):
        archive.pack(src)


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidInput, match="archive"):
        archive.read_files(b"not a tarball")
    with pytest.raises(InvalidInput, match="archive"):
        archive.read_files(gzip.compress(b"not a tarball either" * 100))
