"""Process machinery every layer uses: a database thread, a background event
loop, and backoff between retries. Nothing here knows about events."""
