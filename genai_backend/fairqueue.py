"""A few slots handed out in turns by key, with bounded waiting: one key's burst waits behind itself.

With one FIFO in front of scarce slots, 100 requests of one key make every other key wait for all
of them; here another key waits for at most one turn of each key ahead of it. At most `per_key`
of one key and `max_waiting` in all wait; more are refused (QueueFull), so a flood fills its own
share and other keys still get in. Used for the bcrypt workers (auth/passwords.py, keyed by account
or client address) and the lanes of large list answers (answers.py, keyed by user).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable


class QueueFull(Exception):
    """This key's share of the waiting places, or all of them, are taken."""


class FairQueue:
    def __init__(self, max_waiting: int, per_key: int) -> None:
        self.max_waiting = max_waiting
        self.per_key = per_key
        self._running = 0
        self._waiting = 0
        self._queues: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self, key: Hashable, slots: int) -> None:
        """A slot (of `slots`), now or in this key's turn; QueueFull when there is no place to wait."""
        if self._running < slots and not self._queues:
            self._running += 1
            return
        queue = self._queues.get(key)
        if self._waiting >= self.max_waiting or (queue is not None and len(queue) >= self.per_key):
            raise QueueFull()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot just as the caller went away: pass it on
            else:
                self._forget(key, turn)
            raise

    def _forget(self, key: Hashable, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._queues[key]

    def release(self) -> None:
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            self._waiting -= 1
            if queue:
                self._queues.move_to_end(key)  # the next turn goes to another key
            else:
                del self._queues[key]
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the next waiter
                return
        self._running -= 1
