"""The processes people run: ``manage.py`` commands (``commands/``), how they
start and stop child processes (``processes.py``), how ``runstack`` keeps its
parts running (``supervision.py``) and records where it runs, for the commands
run beside it (``running_stack.py``). The top layer: it may use every part of
``monitor``, and nothing in ``monitor`` uses it."""
