"""Writing output files atomically, with the mode any new file gets.

Every file FractalMIDI writes (MIDI, PNG, WAV) goes through `atomic_path`: the content is
written to a temporary file beside the target, which is renamed into place only once it is
complete, so a reader sees the old file or the new one, never half of one.

`tempfile.mkstemp` is not used for that temporary file: it creates files with mode 0600
whatever the umask, and the rename would give that mode to the output. The temporary file is
created here with mode 0666, from which the kernel removes the umask, as for any file a
program opens for writing: 0644 under the usual umask 022.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path


def _create_temp(path: Path, suffix: str) -> Path:
    """A new empty file beside `path` (hidden, unique name), mode 0666 less the umask."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: no free temporary name beside it")


@contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path beside `path` to write the content to; when the block ends
    without an exception it is renamed to `path` (replacing any file there), otherwise it is
    deleted. Parent folders are created. The file gets the mode of any new file (0666 less
    the umask), not mkstemp's 0600.

        with atomic_path("song.png", ".png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, write, suffix: str = ".tmp") -> Path:
    """`write(tmp_path)` writes the content; it lands at `path` atomically (see
    `atomic_path`). Returns `path` as a `Path`."""
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)
