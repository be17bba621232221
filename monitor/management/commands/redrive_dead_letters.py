"""List dead letters, or re-drive them once their cause is fixed.

Re-driving puts each letter's original bytes back on the events topic, for
the groups that refused it (:mod:`monitor.workers.redrive`); a letter is
marked re-driven only once the broker acknowledged it, and the command fails
if any was not. Each pending letter is listed on one line: its id, the
groups waiting for it, its position and their reasons. Without
``KAFKA_BOOTSTRAP_SERVERS`` re-driving uses the broker of the stack running
from ``VAR_DIR`` (``make run``); listing needs no broker.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.management.running_stack import use_running_broker
from monitor.models import DeadLetter, DeadLetterGroup
from monitor.workers.redrive import redrive_now


class Command(BaseCommand):
    help = "List dead letters, or put selected ones back on the events topic after a fix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="dead letter ids to re-drive")
        parser.add_argument("--reason", help="re-drive those whose reason contains this text")
        parser.add_argument("--all", action="store_true", help="re-drive every pending one")
        parser.add_argument("--list", action="store_true", help="only list pending dead letters")

    def handle(self, *args: Any, **options: Any) -> None:
        pending = DeadLetter.objects.filter(redriven_at__isnull=True).order_by("id")
        if options["list"]:
            for letter in pending.prefetch_related("groups"):
                self.stdout.write(pending_line(letter))
            return
        if options["ids"]:
            selected = pending.filter(pk__in=options["ids"])
        elif options["reason"]:
            waiting = DeadLetterGroup.objects.filter(
                stored_at=None, reason__icontains=options["reason"]
            )
            selected = pending.filter(pk__in=waiting.values("letter_id"))
        elif options["all"]:
            selected = pending
        else:
            raise CommandError("name dead letter ids, --reason TEXT, --all, or --list")
        use_running_broker()
        letters = list(selected)
        done = redrive_now(letters)
        self.stdout.write(f"re-drove {done} of {len(letters)} dead letters")
        if done < len(letters):
            raise CommandError("some dead letters were not acknowledged by the broker")


def pending_line(letter: DeadLetter) -> str:
    """``id<TAB>groups<TAB>topic[partition]@offset: reason``: the groups waiting
    for the letter, and what each said (its reason, and how many times it
    refused the record if more than once), once if they all said the same."""
    parts = [part for part in letter.groups.all() if part.stored_at is None]
    said = {
        part.group: part.reason + (f" ({part.attempts} attempts)" if part.attempts > 1 else "")
        for part in parts
    }
    if len(set(said.values())) == 1:
        text = next(iter(said.values()))
    else:
        text = "; ".join(f"{group}: {words}" for group, words in said.items())
    return f"{letter.pk}\t{','.join(said)}\t{letter}: {text}"
