"""Child process for the rotation crash test: append from 4 threads until killed in a rotation.

Usage: ``python _rotation_child.py JOURNAL LOG``.

Thread 0 appends big records, threads 1-3 small ones, each record under its own key
(the key is its sequence), into 2 KiB segments: a big record that does not fit starts a
rotation while small ones still fit in the active segment. Every append is logged as
``W seq`` before and ``A seq`` after it returns (acknowledged, fsync="always").

``os.posix_fallocate`` is wrapped: when the big writer's rotation has created the next
segment, the child logs ``C``, lets the small writers append at least one more
acknowledged record, and SIGKILLs itself, with the rotation still under way. (The
wrapper works the same on any version of the journal: every one preallocates.)
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading

from cachewise.writeback.journal import FileJournal

SEGMENT = 2048


def main(argv: list[str]) -> None:
    path, log_path = argv[:2]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(log_fd, (line + "\n").encode())

    sequence = itertools.count(1)
    lock = threading.Lock()
    acked_after = threading.Semaphore(0)
    created = threading.Event()
    allocations = itertools.count()
    real_fallocate = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        real_fallocate(fd, offset, length)
        if next(allocations) == 0 or threading.current_thread().name != "big":
            return  # the segment opened at start, or a rotation no small record outruns
        log("C")
        created.set()
        acked_after.acquire(timeout=10)  # a small writer appended to the active segment
        os.kill(os.getpid(), signal.SIGKILL)

    os.posix_fallocate = fallocate
    journal = FileJournal(path, fsync="always", segment_bytes=SEGMENT)
    log("READY")

    def writer(size: int) -> None:
        while True:
            with lock:
                seq = next(sequence)
            after = created.is_set()
            log(f"W {seq}")
            journal.append([(seq, seq, b"x" * size)])
            log(f"A {seq}")
            if after:  # started once the next segment existed
                acked_after.release()

    threading.Thread(target=writer, args=(1500,), name="big", daemon=True).start()
    for _ in range(3):
        threading.Thread(target=writer, args=(10,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
