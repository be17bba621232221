"""The Django project that serves monitor: settings, URLs, ASGI and serving."""
