"""The demo tenant that ``callbutton serve --demo`` creates, so a newcomer can call within a minute."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from server import auth
from storage.db import Database

DEMO_AGENT_EMAIL = "agent@demo.callbutton.invalid"
DEMO_ADMIN_EMAIL = "admin@demo.callbutton.invalid"
DEMO_ORGANISATION = "Demo organisation"


@dataclass(frozen=True)
class DemoTenant:
    agent_email: str
    agent_password: str
    button_key: str
    admin_email: str = DEMO_ADMIN_EMAIL
    admin_password: str = ""


async def ensure_demo_tenant(database: Database, origins: Iterable[str]) -> DemoTenant:
    """Create the demo organisation, agent and button on first use, and reuse them after.

    The agent and the admin get fresh random passwords each time (printed by ``serve --demo``), and
    the button allows ``origins``, where the demo page is served; it asks visitors for their name.
    """
    allowed = sorted(origins)
    password = secrets.token_urlsafe(12)
    password_hash = await auth.hash_password(password)
    user = await database.accounts.user_by_email(DEMO_AGENT_EMAIL)
    if user is None:
        organisation = await database.accounts.create_organisation(DEMO_ORGANISATION)
        user = await database.accounts.create_user(
            organisation.id,
            email=DEMO_AGENT_EMAIL,
            display_name="Demo Agent",
            role="agent",
            password_hash=password_hash,
        )
    else:
        await database.accounts.set_password_hash(user.id, password_hash)
    admin_password = secrets.token_urlsafe(12)
    admin_hash = await auth.hash_password(admin_password)
    admin = await database.accounts.user_by_email(DEMO_ADMIN_EMAIL)
    if admin is None:
        await database.accounts.create_user(
            user.organisation_id,
            email=DEMO_ADMIN_EMAIL,
            display_name="Demo Admin",
            role="admin",
            password_hash=admin_hash,
        )
    else:
        await database.accounts.set_password_hash(admin.id, admin_hash)
    buttons = await database.buttons.all(user.organisation_id)
    if buttons:
        button = buttons[0]
        for origin in allowed:
            button = await database.buttons.allow_origin(user.organisation_id, button.id, origin)
    else:
        button = await database.buttons.create(
            user.organisation_id,
            name="Demo call button",
            allowed_origins=allowed,
            form_fields={"name": "optional", "email": "off", "phone": "off"},
        )
    return DemoTenant(
        agent_email=DEMO_AGENT_EMAIL,
        agent_password=password,
        button_key=button.public_key,
        admin_password=admin_password,
    )
