"""The aiohttp application: HTTP and WebSocket signalling, accounts, call routing, CLI."""
