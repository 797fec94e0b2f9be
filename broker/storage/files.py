"""Durable file operations shared by the storage modules: whole writes, fsyncs, atomic replace.

Called by the indexes, segments, recovery and the log manager. Every helper here either
completes or raises OSError; none of them swallows an error, because a lost fsync error is a
lost write (the kernel reports it once).
"""

from __future__ import annotations

import os
from pathlib import Path

# fdatasync skips the inode's timestamps, which nothing reads; the file size, which readers
# need, is still flushed. Not every platform has it.
fdatasync = getattr(os, "fdatasync", os.fsync)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte; a short write (a full disk) ends in the OSError of the next call."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make the creations, renames and removals of entries in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class AppendFile:
    """A file written only at its end through a buffer, as the indexes are.

    ``buffer(data)`` queues bytes, ``flush()`` writes them, ``fsync()`` makes them durable.
    The file is created on the first flush, so an index that never gets an entry costs no
    file and no descriptor.
    """

    __slots__ = ("_fd", "_pending", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending = bytearray()
        self._fd: int | None = None

    def buffer(self, data: bytes) -> None:
        self._pending += data

    def flush(self) -> None:
        if not self._pending:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        write_all(self._fd, self._pending)
        self._pending.clear()

    def truncate(self, size: int) -> None:
        """Cut the file (buffered bytes included) to ``size`` bytes."""
        self.flush()
        if self._fd is not None:
            os.ftruncate(self._fd, size)
        elif size == 0:
            self.path.unlink(missing_ok=True)
        else:
            os.truncate(self.path, size)

    def fsync(self) -> None:
        """Flush to disk what ``flush`` wrote; safe in a worker thread while the loop buffers."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
