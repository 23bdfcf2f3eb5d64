"""The gateway client: what hospital integrators, tests and the load tool use to talk to Yidi."""

from yidi.client.gateway import GatewayClient, GatewayTimeout, PublishTimeout, ReaderStopped

__all__ = ["GatewayClient", "GatewayTimeout", "PublishTimeout", "ReaderStopped"]
