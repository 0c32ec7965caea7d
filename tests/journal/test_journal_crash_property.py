"""Property: after a crash at a random point the journal loads the state of some moment between
its last completed sync and the crash: never less, never stale, never a phantom record.

A random program of adds, updates, deletes, transactions, syncs and compactions runs against
the journal on the memory file system and against a model. The memory file system then loses
power: a random prefix of the writes not yet synced survives, and the next write may be torn.
The reloaded state must equal the model's state after some prefix of the program at least as
long as what the last completed sync covered. Several rounds run on the same files, so
recycled files (reused pool files, compaction outputs) are replayed after later crashes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal_helpers import TIMEOUT

from pybroker.errors import JournalError
from pybroker.journal import Journal, JournalOptions, MemoryFileFactory

DIRECTORY = Path("/crash/journal")


class Model:
    """What the journal should contain, by the same rules (journal order, tx at commit)."""

    def __init__(self) -> None:
        self.ordered: dict[int, tuple] = {}
        self.sequences: dict[int, list[int]] = {}
        self.sequence = 0
        self.txs: dict[int, dict] = {}

    @classmethod
    def from_state(cls, state: tuple) -> Model:
        model = cls()
        records, prepared = state
        for record in records:
            model._put(record)
        for tx_id, extra, tx_records, deletes in prepared:
            ops = [("update_tx" if record[3] else "add_tx", record[0], record[1], record[2])
                   for record in tx_records] + [("delete_tx", rid, None, None) for rid in deletes]
            model.txs[tx_id] = {"ops": ops, "prepared": True, "extra": extra}
        return model

    def _put(self, record: tuple) -> None:
        self.sequence += 1
        self.ordered[self.sequence] = record
        if record[3]:
            self.sequences[record[0]].append(self.sequence)
        else:
            self.sequences[record[0]] = [self.sequence]

    def _remove(self, record_id: int) -> None:
        for sequence in self.sequences.pop(record_id):
            del self.ordered[sequence]

    def state(self) -> tuple:
        prepared = []
        for tx_id, tx in self.txs.items():
            if tx["prepared"]:
                prepared.append((tx_id, tx["extra"],
                                 [(op[1], op[2], op[3], op[0] == "update_tx")
                                  for op in tx["ops"] if op[0] != "delete_tx"],
                                 [op[1] for op in tx["ops"] if op[0] == "delete_tx"]))
        return list(self.ordered.values()), prepared

    # validity, by the journal's rules
    def pending_adds(self) -> set[int]:
        return {op[1] for tx in self.txs.values() for op in tx["ops"] if op[0] == "add_tx"}

    def tx_targets(self, tx_id: int) -> list[int]:
        tx = self.txs.get(tx_id)
        adds: set[int] = set()
        deletes: set[int] = set()
        for op in tx["ops"] if tx else []:
            if op[0] == "add_tx":
                adds.add(op[1])
            elif op[0] == "delete_tx":
                if op[1] in adds:
                    adds.discard(op[1])
                else:
                    deletes.add(op[1])
        return sorted(adds | (set(self.sequences) - deletes))

    def apply(self, op: tuple) -> None:
        name = op[0]
        if name == "add":
            self._put((op[1], op[2], op[3], False))
        elif name == "update":
            self._put((op[1], op[2], op[3], True))
        elif name == "delete":
            self._remove(op[1])
        elif name in ("add_tx", "update_tx", "delete_tx"):
            tx = self.txs.setdefault(op[4], {"ops": [], "prepared": False, "extra": b""})
            tx["ops"].append(op[:4])
        elif name == "prepare":
            tx = self.txs.setdefault(op[1], {"ops": [], "prepared": False, "extra": b""})
            tx["prepared"] = True
            tx["extra"] = op[2]
        elif name == "commit":
            for kind, record_id, user_type, body in self.txs.pop(op[1])["ops"]:
                if kind == "add_tx":
                    if record_id in self.sequences:
                        self._remove(record_id)
                    self._put((record_id, user_type, body, False))
                elif kind == "update_tx":
                    if record_id in self.sequences:
                        self._put((record_id, user_type, body, True))
                elif record_id in self.sequences:
                    self._remove(record_id)
        elif name == "rollback":
            self.txs.pop(op[1])


def state_of(result) -> tuple:
    return (
        [tuple(record) for record in result.records],
        [(tx.tx_id, tx.extra, [tuple(record) for record in tx.records], list(tx.deletes))
         for tx in result.prepared],
    )


STEP = st.tuples(
    st.sampled_from(["add", "add", "add", "update", "delete", "delete", "add_tx", "update_tx",
                     "delete_tx", "prepare", "commit", "rollback", "sync", "await", "compact",
                     "bad"]),
    st.integers(0, 10**6),  # chooses a target
    st.integers(0, 3),  # chooses a transaction slot
    st.integers(0, 250),  # body length
    st.booleans(),  # sync flag
)

ROUND = st.tuples(
    st.lists(STEP, min_size=1, max_size=60),
    st.sampled_from(["crash", "crash", "crash", "close"]),
    st.integers(0, 1000),  # fraction of the pending writes that survive
    st.one_of(st.none(), st.integers(1, 400)),  # torn bytes of the next write
)

OPTIONS = st.builds(
    JournalOptions,
    file_size=st.sampled_from([1024, 2048, 4096]),
    min_files=st.integers(1, 3),
    pool_files=st.sampled_from([-1, 0, 1, 3]),
    buffer_timeout_ns=st.just(0),
    buffer_size=st.sampled_from([300, 490 * 1024]),
    compact_min_files=st.sampled_from([0, 2, 3]),
    compact_percentage=st.sampled_from([30, 60]),
)


class Program:
    def __init__(self, options: JournalOptions) -> None:
        self.options = options
        self.files = MemoryFileFactory()
        self.files.make_directory(DIRECTORY)
        self.next_id = 1
        self.next_tx = 1
        self.slots: dict[int, int] = {}
        self.background: list[asyncio.Future] = []

    async def run(self, rounds) -> None:
        model = Model()
        for steps, ending, keep_fraction, torn in rounds:
            journal = await Journal.open(DIRECTORY, self.options, self.files)
            result = await asyncio.wait_for(journal.load(), TIMEOUT)
            assert state_of(result) == model.state()
            snapshots = [model.state()]
            durable = 0
            last: tuple[asyncio.Future, bool, int] | None = None
            for step in steps:
                done = await self.step(journal, model, step, snapshots, last)
                if done is None:
                    continue
                kind, value = done
                if kind == "future":
                    last = value
                elif kind == "durable":
                    durable = max(durable, value)
            if ending == "close":
                await asyncio.wait_for(journal.close(), TIMEOUT)
                await self.settle()
                journal, result = await self.reload()
                assert state_of(result) == snapshots[-1]
                await journal.close()
                model = Model.from_state(snapshots[-1])
                continue
            pending = self.files.pending_operations
            self.files = self.files.crash(keep=pending * keep_fraction // 1000, torn_bytes=torn)
            await asyncio.wait_for(journal.close(), TIMEOUT)  # its files are gone: it just stops
            await self.settle()
            journal, result = await self.reload()
            state = state_of(result)
            assert state in snapshots[durable:], (
                f"loaded state is not one of the states from the last sync (op {durable}) "
                f"to the crash (op {len(snapshots) - 1}): "
                f"{[i for i, s in enumerate(snapshots) if s == state]}")
            await journal.close()
            model = Model.from_state(state)
            self.slots.clear()

    async def settle(self) -> None:
        """Collect the background compactions (after a crash they fail: no files)."""
        for task in self.background:
            try:
                await asyncio.wait_for(task, TIMEOUT)
            except JournalError:
                pass
        self.background.clear()

    async def reload(self):
        journal = await Journal.open(DIRECTORY, self.options, self.files)
        return journal, await asyncio.wait_for(journal.load(), TIMEOUT)

    async def step(self, journal: Journal, model: Model, step, snapshots, last):
        name, choice, slot, length, sync = step
        body = bytes([choice % 251]) * length
        live = sorted(model.sequences)
        if name == "sync":
            await asyncio.wait_for(journal.sync(), TIMEOUT)
            return "durable", len(snapshots) - 1
        if name == "await":
            if last is None:
                return None
            future, durable, index = last
            await asyncio.wait_for(future, TIMEOUT)
            return ("durable", index) if durable else None
        if name == "compact":
            if choice % 2:
                await asyncio.wait_for(journal.compact(), TIMEOUT)
            else:  # in the background: the next steps run while it compacts
                self.background.append(asyncio.ensure_future(journal.compact()))
            return None
        if name == "bad":
            # operations the journal must refuse, and the model agrees they are invalid
            dead = self.next_id + 10**9
            for call in (lambda: journal.update(dead, 1, b"", sync=False),
                         lambda: journal.delete(dead, sync=False),
                         lambda: journal.commit(10**9, sync=False)):
                try:
                    call()
                except JournalError:
                    continue
                raise AssertionError("an invalid operation was accepted")
            if live:
                try:
                    journal.append(live[choice % len(live)], 1, b"", sync=False)
                except JournalError:
                    return None
                raise AssertionError("a duplicate add was accepted")
            return None
        tx_id = self.slots.get(slot)
        if name in ("add_tx", "update_tx", "delete_tx", "prepare"):
            if tx_id is None or tx_id not in model.txs:
                tx_id = self.slots[slot] = self.next_tx
                self.next_tx += 1
            if model.txs.get(tx_id, {}).get("prepared"):
                name = "commit" if choice % 2 else "rollback"
        if name == "add":
            op = ("add", self.next_id, choice % 256, body)
            self.next_id += 1
            future = journal.append(op[1], op[2], body, sync=sync)
        elif name in ("update", "delete"):
            if not live:
                return None
            record_id = live[choice % len(live)]
            if name == "update":
                op = ("update", record_id, choice % 256, body)
                future = journal.update(record_id, op[2], body, sync=sync)
            else:
                op = ("delete", record_id)
                future = journal.delete(record_id, sync=sync)
        elif name == "add_tx":
            op = ("add_tx", self.next_id, choice % 256, body, tx_id)
            self.next_id += 1
            future = journal.append_tx(tx_id, op[1], op[2], body)
            sync = False
        elif name in ("update_tx", "delete_tx"):
            targets = model.tx_targets(tx_id)
            if not targets:
                return None
            record_id = targets[choice % len(targets)]
            if name == "update_tx":
                op = ("update_tx", record_id, choice % 256, body, tx_id)
                future = journal.update_tx(tx_id, record_id, op[2], body)
            else:
                op = ("delete_tx", record_id, None, None, tx_id)
                future = journal.delete_tx(tx_id, record_id)
            sync = False
        elif name == "prepare":
            op = ("prepare", tx_id, b"xid-%d" % tx_id)
            future = journal.prepare(tx_id, op[2], sync=sync)
        else:  # commit / rollback
            if tx_id is None or tx_id not in model.txs:
                return None
            op = (name, tx_id)
            future = (journal.commit if name == "commit" else journal.rollback)(tx_id, sync=sync)
        model.apply(op)
        snapshots.append(model.state())
        return "future", (future, sync, len(snapshots) - 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(OPTIONS, st.lists(ROUND, min_size=1, max_size=3))
def test_a_crash_loads_a_state_between_the_last_sync_and_the_crash(options, rounds):
    logging.getLogger("pybroker.journal").setLevel(logging.CRITICAL)
    try:
        asyncio.run(Program(options).run(rounds))
    finally:
        logging.getLogger("pybroker.journal").setLevel(logging.NOTSET)
