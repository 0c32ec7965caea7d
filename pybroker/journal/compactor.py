"""Compaction: rewrite the live records of a set of segments into fresh segments, crash-safely.

Theory of operation
-------------------
The journal picks the *inputs* (every data file at the moment of the cut) and reserves a range
of file ids ``[first, last]`` just above them; appends after the cut go to ids above ``last``.
So in file-id order the compacted *outputs* sit exactly where the inputs were: before every
record appended during or after the compaction, which is what makes a delete or commit
appended meanwhile apply to the compacted data on replay.

The control file ``pybroker-<name>.pbc`` (written temp + fsync + rename + directory fsync)
carries the protocol::

    1. control = STARTED(inputs, first, last)   no output exists before this is durable
    2. outputs created (temp + rename), filled and fdatasynced
    3. control = COMMITTED(inputs, outputs)     the switch: from here the outputs count
    4. inputs invalidated (FREE header, fdatasync) and returned to the pool
    5. control removed (directory fsync)

The next open finishes or undoes whatever a crash interrupted (:func:`recover_interrupted`):

* STARTED: every DATA file whose id is in ``[first, last]`` is an unfinished output: freed.
  The inputs were never touched, so the journal loads as before the compaction.
* COMMITTED: every DATA file whose id is an input is freed (some may already be FREE).
* no control file: nothing was in flight (or step 5 completed).

Outputs and inputs are told apart by file id, never by name, so a pool file reused after step
4 (new id, above ``last``) is never mistaken for an input.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgpack
from crc32c import crc32c

from ..errors import JournalCorruptError, JournalError
from .segment import (
    Segment,
    SegmentSet,
    SegmentState,
    SegmentWriter,
    control_name,
    read_small_file,
    write_small_file_atomically,
)

logger = logging.getLogger("pybroker.journal")

__all__ = [
    "COMMITTED",
    "STARTED",
    "CompactionControl",
    "read_control",
    "recover_interrupted",
]

STARTED: Final = "started"
COMMITTED: Final = "committed"
_CONTROL_MAGIC: Final = b"PYBRKCMP"
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class CompactionControl:
    """The content of the compaction control file."""

    state: str  #: STARTED or COMMITTED
    inputs: tuple[int, ...]  #: file ids being replaced
    first_reserved: int  #: first file id reserved for outputs
    last_reserved: int  #: last file id reserved for outputs
    outputs: tuple[int, ...] = ()  #: file ids written (COMMITTED only)

    def encode(self) -> bytes:
        """Magic, msgpack body, crc32c."""
        body = msgpack.packb([self.state, list(self.inputs), self.first_reserved,
                              self.last_reserved, list(self.outputs)])
        return _CONTROL_MAGIC + body + _CRC.pack(crc32c(body))

    @classmethod
    def decode(cls, data: bytes, path: str) -> CompactionControl:
        """Parse; anything malformed is :class:`JournalCorruptError` (it is written atomically)."""
        body = data[len(_CONTROL_MAGIC):-_CRC.size]
        if (not data.startswith(_CONTROL_MAGIC) or len(data) < len(_CONTROL_MAGIC) + _CRC.size
                or _CRC.unpack(data[-_CRC.size:])[0] != crc32c(body)):
            raise JournalCorruptError("compaction control file damaged", file=path, offset=0)
        try:
            state, inputs, first, last, outputs = msgpack.unpackb(body)
        except Exception as error:  # msgpack's errors are several unrelated types
            raise JournalCorruptError(f"compaction control file unreadable ({error})",
                                      file=path, offset=0) from None
        if state not in (STARTED, COMMITTED):
            raise JournalCorruptError(f"compaction control state {state!r}", file=path, offset=0)
        return cls(state, tuple(inputs), first, last, tuple(outputs))


def read_control(segments: SegmentSet) -> CompactionControl | None:
    """The control file of this journal, or None."""
    path = segments.directory / control_name(segments.stem)
    if not segments.files.exists(path):
        return None
    return CompactionControl.decode(read_small_file(segments.files, path), str(path))


def write_control(segments: SegmentSet, control: CompactionControl) -> None:
    """Write the control file crash-atomically."""
    segments.check_guard()
    write_small_file_atomically(segments.files, segments.directory / control_name(segments.stem),
                                control.encode())


def remove_control(segments: SegmentSet) -> None:
    """Remove the control file durably."""
    path = segments.directory / control_name(segments.stem)
    if segments.files.exists(path):
        segments.check_guard()
        segments.files.remove(path)
        segments.files.sync_directory(segments.directory)


def recover_interrupted(segments: SegmentSet) -> CompactionControl | None:
    """At open: finish (COMMITTED) or undo (STARTED) an interrupted compaction."""
    control = read_control(segments)
    if control is None:
        return None
    if control.state == STARTED:
        doomed = [segment for segment in segments.data_segments()
                  if control.first_reserved <= segment.file_id <= control.last_reserved]
        logger.warning("%s: compaction interrupted before it committed: discarding %d "
                       "partial output file(s), keeping the original %d file(s)",
                       segments.directory / control_name(segments.stem), len(doomed),
                       len(control.inputs))
    else:
        inputs = set(control.inputs)
        doomed = [segment for segment in segments.data_segments() if segment.file_id in inputs]
        logger.warning("%s: finishing a compaction interrupted after it committed: freeing %d "
                       "replaced file(s)", segments.directory / control_name(segments.stem),
                       len(doomed))
    for segment in doomed:
        segments.unregister(segment.file_id)
        segments.release(segment)
    remove_control(segments)
    return control


def write_outputs(segments: SegmentSet, *, inputs: list[int], first_reserved: int,
                  last_reserved: int, epoch: int,
                  produce: Callable[[SegmentWriter], None]) -> list[Segment]:
    """Steps 1-3: write the outputs and commit; return the output files in id order.

    ``produce(writer)`` writes the compacted records with ``writer.write(kind, rest)``. On
    failure the partial outputs and the control file are removed and the error propagates; if
    that cleanup fails too, :class:`CompactionCleanupError` says so (the next open cleans up).
    """
    write_control(segments, CompactionControl(STARTED, tuple(inputs), first_reserved,
                                              last_reserved))
    writer = SegmentWriter(segments, epoch=epoch, first_file_id=first_reserved,
                           last_file_id=last_reserved)
    try:
        produce(writer)
        outputs = writer.finish()
        write_control(segments, CompactionControl(
            COMMITTED, tuple(inputs), first_reserved, last_reserved,
            tuple(segment.file_id for segment in outputs)))
    except BaseException as error:
        _undo(segments, writer.abandon(), error)
        raise
    return outputs


class CompactionCleanupError(JournalError):
    """A failed compaction could not remove what it had written; the next open will."""


def _undo(segments: SegmentSet, outputs: list[Segment], cause: BaseException) -> None:
    try:
        segments.check_guard()  # fenced: leave everything to the next open
        for segment in outputs:
            segment.handle.close()
            segments.files.remove(segment.path)
        if outputs:
            segments.files.sync_directory(segments.directory)
        remove_control(segments)
    except Exception as error:
        raise CompactionCleanupError(
            f"{segments.directory}: compaction failed ({cause}) and its partial output could "
            f"not be removed ({error}); the next open of the journal removes it") from error


def finish(segments: SegmentSet, inputs: list[Segment]) -> None:
    """Steps 4-5, after the journal switched to the outputs: free the inputs, drop the control."""
    for segment in inputs:
        if segment.state is SegmentState.DATA:
            segments.release(segment)
        else:
            segments.release(segment, invalidate=False)
    remove_control(segments)
