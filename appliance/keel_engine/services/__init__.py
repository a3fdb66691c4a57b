"""The service layer: everything the REST API (and later the web UI) does,
independent of HTTP. Functions take a Context and a SQLAlchemy session."""
from dataclasses import dataclass

from ..config import EngineConfig


@dataclass
class Context:
    config: EngineConfig
    sessionmaker: object
    user_id: str | None = None
