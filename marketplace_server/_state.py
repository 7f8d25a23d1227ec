"""What every route reaches through the request: the configuration, storage and ingestor.

Kept apart from ``app`` so the routers can be imported by the application without the
application being imported by them (no import cycle).
"""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from .config import ServerConfig
from .ingest import Ingestor
from .storage import Storage


@dataclasses.dataclass(frozen=True)
class ServerState:
    config: ServerConfig
    storage: Storage
    ingestor: Ingestor


def state_of(request: Request) -> ServerState:
    state = request.app.state.imagekit
    assert isinstance(state, ServerState)
    return state
