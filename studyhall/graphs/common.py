"""Pieces every graph uses: the retry policy for backend failures."""

from __future__ import annotations

from langgraph.types import RetryPolicy


def is_transient(exc: Exception) -> bool:
    """Backend hiccups worth retrying: timeouts, refused connections, server errors."""
    from studyhall.errors import BackendError

    if isinstance(exc, BackendError | TimeoutError | ConnectionError):
        return True
    try:
        import httpx

        return isinstance(exc, httpx.TransportError)
    except ImportError:  # pragma: no cover
        return False


BACKEND_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.5, backoff_factor=2.0, retry_on=is_transient)
