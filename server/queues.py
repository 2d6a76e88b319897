"""The calls waiting for an agent in this process: a queue a button, first come first served, each
waiting visitor told its place; and whom a button's strategy rings among the agents free for a call."""

from __future__ import annotations

import uuid

from server import messages
from server.calls import CallState
from server.livecall import LiveCall
from server.presence import Agent
from storage.buttons import Button


class CallQueues:
    def __init__(self) -> None:
        self._by_button: dict[uuid.UUID, list[LiveCall]] = {}
        self._round_robin: dict[uuid.UUID, uuid.UUID] = {}

    def add(self, live: LiveCall) -> None:
        self._by_button.setdefault(live.button.id, []).append(live)

    def remove(self, live: LiveCall) -> None:
        queue = self._by_button.get(live.button.id)
        if queue is not None and live in queue:
            queue.remove(live)
            if not queue:
                del self._by_button[live.button.id]

    def depth(self) -> int:
        """Calls waiting, in all."""
        return sum(len(queue) for queue in self._by_button.values())

    def waiting(self, organisation_id: uuid.UUID) -> list[LiveCall]:
        """The organisation's queued calls, oldest first."""
        waiting = [
            live
            for queue in self._by_button.values()
            for live in queue
            if live.call.organisation_id == organisation_id and not live.call.ended
        ]
        return sorted(waiting, key=lambda live: live.call.created_at)

    def announce(self, button_id: uuid.UUID) -> None:
        """Tell each waiting visitor of the button its place, when it changed."""
        for index, live in enumerate(self._by_button.get(button_id, [])):
            told = (index + 1, bool(live.rung))
            if told != live.told and live.call.state is CallState.QUEUED:
                live.told = told
                live.send_visitor(
                    messages.CallState(
                        call_id=live.call.id, state=CallState.QUEUED.value, position=told[0], ringing=told[1]
                    )
                )

    def choose(self, button: Button, candidates: list[Agent]) -> list[Agent]:
        """Whom ``button`` rings among ``candidates`` (agents free for the call), by its strategy."""
        if not candidates:
            return []
        if button.strategy == "longest_idle":
            return [min(candidates, key=lambda a: a.idle_since)]
        if button.strategy == "round_robin":
            ordered = sorted(candidates, key=lambda a: str(a.user_id))
            last = self._round_robin.get(button.id)
            after = [a for a in ordered if last is not None and str(a.user_id) > str(last)]
            chosen = (after or ordered)[0]
            self._round_robin[button.id] = chosen.user_id
            return [chosen]
        return candidates
