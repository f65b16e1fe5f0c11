"""State: the queue (messages live inside the database), credentials, and later shared data.

``open_storage(url)`` picks the backend by URL scheme: ``sqlite:///path`` or
``postgresql://…``.
"""

from gateway.storage.base import Storage, open_storage

__all__ = ["Storage", "open_storage"]
