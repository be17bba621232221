"""The processes people run: ``manage.py`` commands (``commands/``) and how they
start and stop child processes (``processes.py``). The top layer: it may use
every part of ``monitor``, and nothing in ``monitor`` uses it."""
