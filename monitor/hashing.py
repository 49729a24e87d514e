"""The content of a file a process runs, hashed for content hash rules (match.sha256).

Read through the process itself (/proc/PID/exe, or a descriptor of its: a bare loader's
program), so a file with no name left (memfd, deleted) is read all the same, while the
kernel holds the process at its exec: the file cannot change meanwhile (Linux refuses writes
to a file being executed). Bounded: a larger file is hashed by its first MAX_BYTES.
"""

from __future__ import annotations

import hashlib

MAX_BYTES = 512 << 20
CHUNK = 1 << 20


def hash_file(pid: int, fd: int | None = None) -> str | None:
    """SHA-256 (hex) of what the process runs (`fd`: of that descriptor of its); None if it is gone."""
    path = f"/proc/{pid}/fd/{fd}" if fd is not None else f"/proc/{pid}/exe"
    digest, left = hashlib.sha256(), MAX_BYTES
    try:
        with open(path, "rb") as fh:
            while left > 0 and (chunk := fh.read(min(CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
    except OSError:
        return None
    return digest.hexdigest()
