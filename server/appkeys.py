"""Typed keys for what the application object holds (aiohttp ``AppKey``)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from server.auth import Sessions
from server.cliptokens import ClipTokens
from server.cluster import Cluster
from server.config import Settings
from server.directory import Directory
from server.limits import Limits
from server.presence import Roster
from server.routing import Switchboard
from storage.clips import ClipStore
from storage.db import Database
from storage.recordings import RecordingStore

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
SESSIONS = web.AppKey("sessions", Sessions)
ROSTER = web.AppKey("roster", Roster)
LIMITS = web.AppKey("limits", Limits)
RECORDINGS = web.AppKey("recordings", RecordingStore)
CLIPS = web.AppKey("clips", ClipStore)
CLIP_TOKENS = web.AppKey("clip_tokens", ClipTokens)
SWITCHBOARD = web.AppKey("switchboard", Switchboard)
#: Buttons by key and whom they ring, kept while Postgres says they hold (server/directory.py).
DIRECTORY = web.AppKey("directory", Directory)
DEMO_PAGE = web.AppKey("demo_page", str)
#: With CALLBUTTON_REDIS_URL: this node's membership of the cluster, and its client for relaying.
CLUSTER = web.AppKey("cluster", Cluster)
CLUSTER_HTTP = web.AppKey("cluster_http", aiohttp.ClientSession)
