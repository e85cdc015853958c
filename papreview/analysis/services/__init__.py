"""Writes for model versions and analysis runs: one module per concern, the public names here.

* versions.py: registering and activating model versions, rolling back to the previous one;
* queue.py: `analysis_request` and `analysis_publish` (the outbox);
* run.py: `analysis_run`, executing a run (lock, claim, progress, cells, triage);
* sweep.py: `analysis_sweep`, the beat sweeper (unpublished, lost and stale runs).

The life of an analysis:

1. `analysis_request(slide=...)` (slide upload, re-run button, `manage.py analyze`) creates a
   queued AnalysisRun in the caller's transaction and, on commit, `analysis_publish` hands the job
   (the slide id) to the broker and records `published_at` (the outbox). A broker that is down
   leaves the run unpublished; `analysis_sweep` (celery beat) sends it once the broker is back.
2. `analysis_run(slide_id=...)` (the `inference` queue task) takes the slide's execution lock
   (a PostgreSQL advisory lock: held by a live process only, freed when it dies), claims the run
   (attempt + 1), runs the pipeline with throttled progress writes, then writes the cells, the
   triage score and the statuses in ONE transaction. A re-run replaces only that slide's
   unreviewed predictions; reviewed, rejected and added cells and every CellRevision stay.
3. A user-caused error (corrupt slide, bad checkpoint) fails the run and the slide once, with the
   message as reason. Transient errors (database or broker connection) propagate to the task,
   which retries them with backoff (papreview.core.tasks.TRANSIENT_RETRY). A run whose worker
   died is taken over by the next delivery (late ack + reject on worker lost + Redis visibility
   timeout) or re-sent by the sweeper, and failed after ANALYSIS_MAX_ATTEMPTS starts.
"""

from papreview.analysis.services.queue import analysis_publish, analysis_request
from papreview.analysis.services.run import (
    RunOutcome,
    analysis_give_up,
    analysis_run,
    slide_execution_lock,
)
from papreview.analysis.services.sweep import SweepReport, analysis_sweep
from papreview.analysis.services.versions import (
    model_version_activate,
    model_version_register,
    model_version_rollback,
    model_versions_for_analysis,
)
from papreview.core.tasks import TRANSIENT_ERRORS

__all__ = [
    "TRANSIENT_ERRORS",
    "RunOutcome",
    "SweepReport",
    "analysis_give_up",
    "analysis_publish",
    "analysis_request",
    "analysis_run",
    "analysis_sweep",
    "model_version_activate",
    "model_version_register",
    "model_version_rollback",
    "model_versions_for_analysis",
    "slide_execution_lock",
]
