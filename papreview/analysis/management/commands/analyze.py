"""`manage.py analyze`: (re)queue the analysis of slides by id or by status.

    manage.py analyze 12 13            # these slides
    manage.py analyze --status failed  # every failed slide
    manage.py analyze --status uploaded,failed --dry-run
    manage.py analyze --sweep          # what the beat sweeper does, once, now

Jobs go to the `inference` queue when each request commits; if the broker is down they stay in
the outbox (unpublished runs) and the sweeper sends them later.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from papreview.analysis.services import analysis_request, analysis_sweep
from papreview.cases.models import Slide, SlideStatus
from papreview.core.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Queue the analysis of slides, by id or by status (e.g. --status failed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slide_ids", nargs="*", type=int, help="Slide ids.")
        parser.add_argument(
            "--status",
            default="",
            help=f"Comma-separated slide statuses to (re)queue: {', '.join(SlideStatus.values)}.",
        )
        parser.add_argument("--dry-run", action="store_true", help="List, queue nothing.")
        parser.add_argument(
            "--sweep",
            action="store_true",
            help="Run the sweeper once: send unpublished jobs, re-send or fail stuck runs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[int] = options["slide_ids"]
        statuses = [s.strip() for s in options["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in SlideStatus.values]
        if unknown:
            raise CommandError(
                f"Unknown status {', '.join(unknown)}; use {', '.join(SlideStatus.values)}."
            )
        if options["sweep"]:
            report = analysis_sweep()
            self.stdout.write(
                f"Sweep: {len(report.published)} sent from the outbox, {len(report.resent)} "
                f"stuck runs sent again, {len(report.failed)} failed, {len(report.busy)} busy."
            )
            if not ids and not statuses:
                return
        if not ids and not statuses:
            raise CommandError("Give slide ids or --status (e.g. --status failed).")

        slides = Slide.objects.order_by("pk")
        if ids:
            slides = slides.filter(pk__in=ids)
            missing = sorted(set(ids) - set(slides.values_list("pk", flat=True)))
            if missing:
                self.stderr.write(f"No slide with id {', '.join(map(str, missing))}.")
        if statuses:
            slides = slides.filter(status__in=statuses)

        queued = refused = 0
        for slide in slides:
            if options["dry_run"]:
                self.stdout.write(f"would queue slide {slide.pk} ({slide.status})")
                continue
            try:
                run = analysis_request(slide=slide)
            except ApplicationError as exc:
                refused += 1
                self.stderr.write(f"slide {slide.pk}: {exc.message}")
                continue
            queued += 1
            run.refresh_from_db(fields=["published_at"])
            sent = "sent" if run.published_at else "kept in the outbox (broker unreachable)"
            self.stdout.write(f"slide {slide.pk}: run {run.pk} queued, job {sent}")
        if not options["dry_run"]:
            self.stdout.write(self.style.SUCCESS(f"{queued} queued, {refused} refused."))
            if refused and not queued:
                raise CommandError("Nothing was queued.")
