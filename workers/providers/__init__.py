"""Provider adapters behind one small Protocol (base.Provider)."""

from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    Provider,
)

__all__ = ["ChatCall", "ChatResponse", "EmbeddingCall", "EmbeddingResponse", "Provider"]
