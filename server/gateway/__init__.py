"""The gateway for terminals that speak the 2016 national protocol (JT/T 808 + training extension).

``service`` holds the asyncio TCP server (:class:`Gateway`) and its limits (:class:`GatewayConfig`); ``connection``
one terminal's states, deadlines and replies; ``main`` the ``jiapei gateway`` program; ``demo_support`` what the demo
needs to run a national car. The records go through :mod:`server.ingest_jt808` into the server's database.
"""

from __future__ import annotations

from server.gateway.service import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
