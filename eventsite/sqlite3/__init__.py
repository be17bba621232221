"""Django's SQLite backend with writers taking turns (base.py)."""
