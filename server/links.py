"""Call links as the switchboard sees them: a claim on a single-use, expiring link."""

from __future__ import annotations

import re
import uuid

from storage.call_links import CallLinks

#: The shape of a call link token (``storage.call_links`` makes them).
TOKEN = re.compile(r"^cl_[A-Za-z0-9_-]{32}$")


class CallLinkClaim:
    """A visitor's hold on a call link, claimed when the call is placed."""

    def __init__(self, links: CallLinks, token: str, agent_id: uuid.UUID) -> None:
        self._links = links
        self._token = token
        self.agent_id = agent_id

    async def claim(self) -> bool:
        return await self._links.use(self._token) is not None

    async def attach(self, call_id: uuid.UUID) -> None:
        await self._links.attach(self._token, call_id)
