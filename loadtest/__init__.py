"""``callbutton loadtest``: synthetic visitors and agents that call through a deployment and check
every call end to end. A client of the public protocol and REST API only: it may use ``media`` for
synthetic audio, never ``server`` or ``storage``."""
