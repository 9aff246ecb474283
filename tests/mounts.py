"""Real file systems that fail on purpose: a small tmpfs to fill, an ext4 image the kernel turns read-only.

Mounting needs root (CI runs as root); elsewhere the tests that use these are
skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a file system to break needs root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` (made if missing)."""
    _need("mount", "umount")
    where.mkdir(parents=True, exist_ok=True)
    made = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield where
    finally:
        _run("umount", "-l", str(where))


def fill(disk: Path) -> Path:
    """Take every byte left on ``disk``; delete the returned file to give them back."""
    filler = disk / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


class Ext4:
    """An ext4 file system in an image file, mounted with ``errors=remount-ro``."""

    def __init__(self, image: Path, where: Path) -> None:
        self.image, self.where = image, where

    def mount(self) -> None:
        made = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.where))
        if made.returncode != 0:
            pytest.skip(f"cannot loop-mount an ext4 image here: {made.stderr.strip()}")

    def device(self) -> str:
        """The loop device's name (``loopN``), read from the mount table: never another file system's."""
        source = _run("findmnt", "-n", "-o", "SOURCE", str(self.where)).stdout.strip()
        name = Path(source).name
        if not name.startswith("loop"):
            raise AssertionError(f"{self.where} is mounted from {source!r}, not a loop device")
        return name

    def break_it(self) -> None:
        """Make the kernel find an error on it, so it turns read-only under every open file."""
        Path(f"/sys/fs/ext4/{self.device()}/trigger_fs_error").write_text("eventbus test\n")

    def repair(self) -> None:
        """Unmount (nothing may have a file open on it any more), check, and mount it again in the same place."""
        unmounted = _run("umount", str(self.where))
        if unmounted.returncode != 0:
            raise AssertionError(f"cannot unmount {self.where}: {unmounted.stderr.strip()}")
        checked = _run("e2fsck", "-fy", str(self.image))
        if checked.returncode not in (0, 1):  # 1: errors corrected
            raise AssertionError(f"e2fsck failed: {checked.stdout}{checked.stderr}")
        self.mount()


@contextmanager
def ext4(where: Path, image: Path, size_mb: int = 32) -> Iterator[Ext4]:
    _need("mount", "umount", "mkfs.ext4", "e2fsck", "findmnt")
    if not Path("/sys/fs/ext4").is_dir():
        pytest.skip("the kernel has no ext4 in /sys/fs/ext4")
    where.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as fh:
        fh.truncate(size_mb << 20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    fs = Ext4(image, where)
    fs.mount()
    try:
        yield fs
    finally:
        _run("umount", "-l", str(where))
