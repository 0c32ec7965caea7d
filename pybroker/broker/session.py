"""ServerSession: the only door protocol handlers use into the broker core.

A protocol connection opens one or more sessions (one per AMQP session, one per MQTT or STOMP
connection). Every operation checks the session's principal against security-settings first.
Temporary queues created by a session are deleted when it closes; its consumers are closed and
their unsettled messages go back to their queues.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import TYPE_CHECKING

from pybroker.config.model import RoutingType
from pybroker.errors import SecurityError

from .addressing import AddressInfo, split_fqqn
from .message import Message
from .postoffice import AddressNotFoundError, RouteResult
from .queue import Deliverer, Queue, ServerConsumer
from .security import Principal
from .transaction import Transaction

if TYPE_CHECKING:
    from .server import BrokerServer

log = logging.getLogger("pybroker.broker")

_session_ids = itertools.count(1)


class ServerSession:
    """One client session: sends, consumers, queues, all through security checks."""

    def __init__(
        self,
        server: BrokerServer,
        *,
        principal: Principal,
        protocol: str,
        connection_id: str,
        client_id: str | None = None,
        remote_address: str | None = None,
    ) -> None:
        self.session_id = next(_session_ids)
        self.server = server
        self.principal = principal
        self.protocol = protocol
        self.connection_id = connection_id
        self.client_id = client_id
        self.remote_address = remote_address
        self.consumers: dict[int, ServerConsumer] = {}
        self.temporary_queues: set[str] = set()
        self.temporary_addresses: set[str] = set()
        self.closed = False
        self._send_checked: set[str] = set()
        self.messages_sent = 0
        self.transactions: dict[int, Transaction] = {}

    @property
    def post_office(self):
        return self.server.post_office

    @property
    def user(self) -> str | None:
        return self.principal.user

    def check(self, address: str, permission: str, queue: str | None = None) -> None:
        self.server.security.check(self.principal, address, permission, queue)

    # -- sending ---------------------------------------------------------------------------
    def send(self, message: Message, routing_type: RoutingType | None = None) -> RouteResult:
        """Route ``message``. Await ``result.durable`` (when not None) before telling the client."""
        address = message.address
        if address not in self._send_checked:
            base, queue = split_fqqn(address)
            self.check(base, "send", queue)
            if len(self._send_checked) < 1000:
                self._send_checked.add(address)
        server = self.server
        if not server.active:
            server.check_accepting()
        if server.populate_validated_user and self.principal.user:
            message.user = self.principal.user
        self.messages_sent += 1
        return server.post_office.route(message, routing_type, auto_create=True)

    # -- transactions ------------------------------------------------------------------------
    def begin_transaction(self) -> Transaction:
        """A new transaction: ``send_transacted`` / ``consumer`` acks enlist in it."""
        storage = self.post_office.storage
        transaction = Transaction(self.post_office, storage.begin_tx())
        self.transactions[transaction.tx_id] = transaction
        return transaction

    def send_transacted(
        self, transaction: Transaction, message: Message, routing_type: RoutingType | None = None
    ) -> None:
        """Check ``message`` now; it is routed when ``transaction`` commits."""
        base, queue = split_fqqn(message.address)
        self.check(base, "send", queue)
        self.server.check_accepting()
        if self.server.populate_validated_user and self.principal.user:
            message.user = self.principal.user
        transaction.send(message, routing_type)

    async def commit(self, transaction: Transaction) -> None:
        try:
            await transaction.commit()
        finally:
            self.transactions.pop(transaction.tx_id, None)

    def rollback(self, transaction: Transaction) -> None:
        transaction.rollback()
        self.transactions.pop(transaction.tx_id, None)

    def check_send(self, address: str) -> None:
        base, queue = split_fqqn(address)
        self.check(base, "send", queue)

    # -- addresses and queues --------------------------------------------------------------
    def address_query(
        self, address: str, routing_type: RoutingType | None, *, auto_create: bool = True
    ) -> AddressInfo | None:
        """The address, auto-created if settings and permissions allow."""
        info = self.post_office.addresses.get(address)
        if info is None or (routing_type is not None and routing_type not in info.routing_types):
            if not auto_create:
                return info
            settings = self.server.address_settings(address)
            if not settings.auto_create_addresses:
                return info
            try:
                self.check(address, "createAddress")
            except SecurityError:
                if info is None:
                    raise
                return info
            if (
                (routing_type or settings.default_address_routing_type) is RoutingType.ANYCAST
                and settings.auto_create_queues
            ):
                self.check(address, "createDurableQueue")
        return self.post_office.address_query(address, routing_type, auto_create=auto_create)

    def find_queue(self, name: str) -> Queue | None:
        return self.post_office.find_queue(name)

    def matching_queue(self, address: str, routing_type: RoutingType | None) -> Queue | None:
        return self.post_office.matching_queue(address, routing_type)

    def create_queue(
        self,
        name: str,
        address: str,
        routing_type: RoutingType,
        *,
        filter_expression: str | None = None,
        durable: bool = True,
        temporary: bool = False,
        auto_created: bool = False,
        exist_ok: bool = False,
        max_consumers: int | None = None,
    ) -> Queue:
        if name in self.post_office.queues and exist_ok:
            return self.post_office.queues[name]
        permission = "createDurableQueue" if durable and not temporary else "createNonDurableQueue"
        self.check(address, permission)
        if address not in self.post_office.addresses:
            self.check(address, "createAddress")
        queue = self.post_office.create_queue(
            name,
            address,
            routing_type,
            filter_expression=filter_expression,
            durable=durable,
            temporary=temporary,
            auto_created=auto_created,
            user=self.principal.user,
            exist_ok=exist_ok,
            max_consumers=max_consumers,
        )
        if temporary:
            self.temporary_queues.add(name)
        return queue

    def create_temporary_queue(
        self,
        address: str | None = None,
        routing_type: RoutingType = RoutingType.ANYCAST,
        *,
        name: str | None = None,
        filter_expression: str | None = None,
    ) -> Queue:
        """A queue deleted when this session closes (AMQP dynamic terminus, MQTT clean session)."""
        name = name or str(uuid.uuid4())
        return self.create_queue(
            name,
            address or name,
            routing_type,
            filter_expression=filter_expression,
            durable=False,
            temporary=True,
        )

    def delete_queue(self, name: str) -> None:
        queue = self.post_office.find_queue(name)
        if queue is None:
            raise AddressNotFoundError(f"queue {name!r} does not exist")
        permission = "deleteDurableQueue" if queue.durable else "deleteNonDurableQueue"
        self.check(queue.address, permission)
        self.post_office.delete_queue(name, force=True)
        self.temporary_queues.discard(name)

    # -- consumers -------------------------------------------------------------------------
    def create_consumer(
        self,
        queue_name: str,
        deliverer: Deliverer,
        *,
        filter_expression: str | None = None,
        browse_only: bool = False,
        priority: int = 0,
    ) -> ServerConsumer:
        """Consume from a queue (checks ``consume`` or ``browse`` on its address)."""
        queue = self.post_office.find_queue(queue_name)
        if queue is None:
            raise AddressNotFoundError(f"queue {queue_name!r} does not exist")
        permission = "browse" if browse_only else "consume"
        self.check(queue.address, permission, queue.name)
        consumer_filter = self.server.make_filter(filter_expression)
        consumer = queue.add_consumer(
            deliverer, filter=consumer_filter, browse_only=browse_only, priority=priority, session=self
        )
        self.consumers[consumer.consumer_id] = consumer
        return consumer

    def close_consumer(self, consumer: ServerConsumer, *, failed: bool = True) -> None:
        self.consumers.pop(consumer.consumer_id, None)
        consumer.close(failed=failed)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self, *, failed: bool = True) -> None:
        """Close every consumer (unsettled messages go back) and delete temporary queues."""
        if self.closed:
            return
        self.closed = True
        # consumers first: their unsettled messages (those enlisted in a transaction too) go
        # back once, counted as failed deliveries; the rollback then finds nothing to return
        for consumer in list(self.consumers.values()):
            consumer.close(failed=failed)
        self.consumers.clear()
        for transaction in list(self.transactions.values()):
            transaction.rollback()
        self.transactions.clear()
        for name in list(self.temporary_queues):
            if name in self.post_office.queues:
                try:
                    self.post_office.delete_queue(name, force=True)
                except Exception:  # noqa: BLE001 - cleanup must go on for the other queues
                    log.exception("could not delete temporary queue %s", name)
        self.temporary_queues.clear()
        for address in list(self.temporary_addresses):
            info = self.post_office.addresses.get(address)
            if info is not None and not self.post_office.bindings.get(address):
                self.post_office.delete_address(address)
        self.server.session_closed(self)

    def __repr__(self) -> str:
        return f"ServerSession(id={self.session_id}, protocol={self.protocol}, user={self.user!r})"

