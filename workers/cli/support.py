"""What every ``headway`` command shares: the consoles and the settings, read once with a
clear error."""

from __future__ import annotations

from pydantic import ValidationError
from rich.console import Console

from broker.errors import HeadwayError
from broker.settings import Settings

console = Console()
err = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise HeadwayError(f"invalid HEADWAY_* settings:\n{error}") from None
