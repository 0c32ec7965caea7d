"""AMQP local transactions (coordinator link, declare/discharge) with proton's client."""

from __future__ import annotations

import asyncio

import pytest
from proton.handlers import MessagingHandler
from proton.reactor import Container
from support import Capability, TransactedSender, TransactionOutcomes, receive, send

pytestmark = pytest.mark.asyncio


class TransactedReceiver(MessagingHandler, TransactionOutcomes):
    """Receives ``count`` messages, accepts them in a transaction, then commits or aborts."""

    def __init__(self, port: int, count: int, *, commit: bool) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        self.port = port
        self.count = count
        self.commit = commit
        self.received: list[str] = []

    def on_start(self, event):
        self.connection = event.container.connect(f"amqp://127.0.0.1:{self.port}")
        self.receiver = event.container.create_receiver(self.connection, "txq", options=Capability("queue"))
        event.container.declare_transaction(self.connection, handler=self)

    def on_transaction_declared(self, event):
        self.transaction = event.transaction
        self.receiver.flow(self.count)

    def on_message(self, event):
        self.received.append(event.message.body)
        self.transaction.accept(event.delivery)
        if len(self.received) == self.count:
            if self.commit:
                self.transaction.commit()
            else:
                self.transaction.abort()


async def test_committed_sends_arrive_and_aborted_ones_do_not(pybroker_broker):
    port = pybroker_broker.port
    aborted = TransactedSender(port, ["lost-1", "lost-2"], commit=False)
    await asyncio.to_thread(Container(aborted).run)
    assert aborted.outcome == "aborted"
    committed = TransactedSender(port, ["a", "b", "c"], commit=True)
    await asyncio.to_thread(Container(committed).run)
    assert committed.outcome == "committed"
    assert await asyncio.to_thread(receive, port, "txq", 3) == ["a", "b", "c"]
    assert pybroker_broker.server.post_office.queues["txq"].message_count == 0


async def test_transacted_acks_apply_at_commit_and_abort_redelivers(pybroker_broker):
    port = pybroker_broker.port
    await asyncio.to_thread(send, port, "txq", ["m1", "m2"])
    aborting = TransactedReceiver(port, 2, commit=False)
    await asyncio.to_thread(Container(aborting).run)
    assert aborting.outcome == "aborted" and aborting.received == ["m1", "m2"]
    queue = pybroker_broker.server.post_office.queues["txq"]
    assert queue.message_count == 2
    committing = TransactedReceiver(port, 2, commit=True)
    await asyncio.to_thread(Container(committing).run)
    assert committing.outcome == "committed" and committing.received == ["m1", "m2"]
    assert queue.message_count == 0 and queue.messages_acknowledged == 2


async def test_transactions_are_durable(tmp_path):
    from pybroker.testing import embedded_broker

    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        sender = TransactedSender(broker.port, ["kept-1", "kept-2"], commit=True)
        await asyncio.to_thread(Container(sender).run)
        assert sender.outcome == "committed"
        dropped = TransactedSender(broker.port, ["dropped"], commit=False)
        await asyncio.to_thread(Container(dropped).run)
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        assert await asyncio.to_thread(receive, broker.port, "txq", 2) == ["kept-1", "kept-2"]
        assert broker.server.post_office.queues["txq"].message_count == 0
