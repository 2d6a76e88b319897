"""Persistence: Postgres repositories, SQL migrations and the local development cluster.

Never imports ``server`` or ``media``.
"""
