"""The loop that learns the lab's normal (issue 17, item 5): a reproducible experiment through the
app's own services, as the lab's people and workers would run it. Prints figures, writes
`<out>/nilm_loop.json` and `<out>/nilm_loop.png`; not a test.

A lab with a new preparation (the liquid-based fields of `lbc/`) starts with the CRIC-only models
(the committed detector and the classifier from before any LBC data, git `af9d454`), registered
and active. Then, for N = 25, 50, 100, ... (cumulative: the lab goes on working):

1. the next LBC NILM fields of the **train** part (`inference.data.fields.field_split`, seed 2021)
   are uploaded, one patient each, resized x1.77 (the size a scanner at CRIC's magnification
   gives), and analysed by the worker's task (Celery eager, in this process) with the active
   versions;
2. a cytotechnologist looks at every flagged cell (a gallery sighting) and marks them "reviewed,
   none abnormal" (`cells_clear_seen`: on a NILM field none is), then signs the slide out NILM;
3. an admin exports every signed-out slide (the Datasets page's defaults) and retrains
   (`retrain_job_request`: both stages fine-tuned from the active versions; RETRAIN_MERGE_BASE:
   on the export plus the CRIC base data, the fusion fitted on both validation parts);
4. the admin activates both new versions through the gate (`model_version_activate_by`); what
   the gate said is printed, and a refusal is overridden with a reason (the curve is the point);
5. the active pipeline is scored by `python -m inference evaluate` (the one evaluation path) on
   the LBC **val** part (95 fields, field labels: abnormal calls per NILM field, field AUC) and
   on the CRIC validation fields (the conventional smears must not get worse).

The LBC test part and the CRIC test fields are never touched. Needs PostgreSQL (DATABASE_URL:
a database of its own, flushed first) and the data (PAPREVIEW_DATA_DIR or ../shared/data).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/papreview_loop \\
        .venv/bin/python benchmarks/nilm_loop.py [--n 25,50,100,180] [--epochs 6] [--out runs/loop]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CRIC_ONLY_CLASSIFIER = "af9d454"  # the commit whose classifier had seen no LBC data


def _setup(media: Path, epochs: int, threads: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")
    os.environ["MEDIA_ROOT"] = str(media)
    os.environ["RETRAIN_MERGE_BASE"] = "true"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from papreview.celery import celery_app

    celery_app.conf.task_always_eager = True  # the workers' tasks, run in this process
    common = ["--epochs", str(epochs), "--bf16", "off", "--threads", str(threads)]
    settings.RETRAIN_TRAINING_ARGS = {"detector": common, "classifier": common}
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)


def _people() -> dict[str, Any]:
    from django.contrib.auth.models import User

    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_set_roles

    out = {}
    for name, roles in (("ct", [Role.CYTOTECHNOLOGIST]), ("admin", [Role.ADMIN])):
        user = User.objects.create_user(name, password=None)
        out[name] = user_set_roles(user=user, roles=roles)
    return out


def _lbc_fields(data_dir: Path) -> tuple[list[str], Path]:
    from inference.data.fields import field_split, read_field_labels

    labels = read_field_labels(data_dir / "lbc" / "fields.csv")
    train = field_split(labels)["train"]
    return [n for n in train if not labels[n]], data_dir / "lbc" / "images"


def _upscaled(src: Path, out: Path, factor: float) -> Path:
    import cv2

    from inference.scale import rescaled
    from inference.slides import read_image

    big = rescaled(read_image(src), factor)
    path = out / f"{src.stem}.png"
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    return path


def _lab_signs_out(names: list[str], images: Path, tmp: Path, people: dict[str, Any]) -> int:
    """Upload, analyse, review and sign out NILM each field; the flagged cells cleared."""
    from django.core.files import File

    from papreview.cases.models import Slide
    from papreview.cases.services import patient_create
    from papreview.review.models import SightingVia
    from papreview.review.selectors import slide_flag_summary
    from papreview.review.services import cell_sightings_record, cells_clear_seen
    from papreview.uploads.services import slide_upload
    from papreview.workflow.services import slide_sign_out

    ct, cleared = people["ct"], 0
    for name in names:
        patient = patient_create(identifier=f"LBC-{Path(name).stem}", created_by=ct)
        path = _upscaled(images / name, tmp, 1.77)
        with path.open("rb") as fh:
            slide = slide_upload(
                patient=patient, file=File(fh, name=path.name), uploaded_by=ct
            )  # analysed on commit (eager task)
        slide = Slide.objects.get(pk=slide.pk)
        flagged = [pk for pk, _ in slide_flag_summary(slide_id=slide.pk).undecided]
        if flagged:
            cell_sightings_record(slide=slide, by=ct, cell_ids=flagged, via=SightingVia.GALLERY)
            cleared += len(cells_clear_seen(slide=slide, by=ct, cell_ids=flagged).cleared)
        slide_sign_out(slide=slide, by=ct, bethesda_category="NILM")
    return cleared


def _export_and_retrain(n: int, people: dict[str, Any]) -> Any:
    from papreview.datasets.models import DatasetExport, ExportStatus
    from papreview.datasets.services import dataset_export_create
    from papreview.registry.models import RetrainJob, RetrainStatus
    from papreview.registry.retrain import retrain_job_request

    export = dataset_export_create(name=f"lab NILM {n}", created_by=people["admin"])
    export = DatasetExport.objects.get(pk=export.pk)  # built on commit (eager task)
    if export.status != ExportStatus.READY:
        raise SystemExit(f"export {export} is {export.status}: {export.error}")
    job = RetrainJob.objects.get(pk=retrain_job_request(export=export, by=people["admin"]).pk)
    if job.status != RetrainStatus.DONE:
        raise SystemExit(f"retrain job {job.pk} {job.status}: {job.error}")
    return job


def _activate(job: Any, people: dict[str, Any]) -> dict[str, Any]:
    from papreview.registry.activation import ActivationRefusedError, model_version_activate_by

    said: dict[str, Any] = {}
    for stage in ("detector", "classifier"):
        version = getattr(job, f"new_{stage}")
        try:
            model_version_activate_by(model_version=version, by=people["admin"])
            said[stage] = "activated: the gate passed"
        except ActivationRefusedError as exc:
            said[stage] = f"gate refused ({exc.message}); activated with a reason"
            model_version_activate_by(
                model_version=version,
                by=people["admin"],
                reason="NILM-loop experiment: measured on held-out LBC and CRIC fields",
            )
    return said


def _evaluate(out: Path, tag: str, data_dir: Path) -> dict[str, Any]:
    """The active pair scored by `python -m inference evaluate` on LBC val and CRIC val."""
    from papreview.analysis.adapter import model_version_local_path
    from papreview.analysis.services import model_versions_for_analysis

    detector, classifier = model_versions_for_analysis()
    pair = [
        "--detector",
        str(model_version_local_path(detector)),
        "--classifier",
        str(model_version_local_path(classifier)),
    ]
    runs = {
        "lbc_val": [
            "--images", str(data_dir / "lbc" / "images"),
            "--fields", str(data_dir / "lbc" / "fields.csv"),
            "--upscale", "1.77", "--split", "val",
        ],
        "cric_val": [
            "--images", str(data_dir / "cric" / "images"),
            "--cells", str(data_dir / "cric" / "cells.csv"), "--split", "val",
        ],
    }  # fmt: skip
    figures: dict[str, Any] = {"detector": detector.name, "classifier": classifier.name}
    for key, args in runs.items():
        target = out / f"{tag}_{key}.json"
        cmd = [sys.executable, "-m", "inference", "evaluate", *pair, *args, "--out", str(target)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        scored = json.loads(target.read_text())
        reviewer, metrics = scored["reviewer"], scored["metrics"]
        if key == "lbc_val":
            figures[key] = {
                "nilm_fields": reviewer["field_auc"]["fields"]
                - reviewer["field_auc"]["abnormal_fields"],
                "calls_per_nilm_field": reviewer["false_alarms_per_nilm_field"],
                "auc_max_cell": reviewer["field_auc"]["auc_max_cell"],
                "auc_top3_mean": reviewer["field_auc"]["auc_top3_mean"],
            }
        else:
            figures[key] = {
                "recall_30px": reviewer["abnormal_recall_by_radius_px"]["30"],
                "false_alarms_per_field": reviewer["false_alarms_per_field"],
                "far_per_field": reviewer["abnormal_calls_per_field"]["far_from_marked"]["mean"],
                "top_1": reviewer["top_k_hit"]["top_1"],
                "abnormal_recall": metrics.get("abnormal_recall"),
            }
    return figures


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    lbc = [r["lbc_val"]["calls_per_nilm_field"] for r in rows]
    a.plot(n, [c["median"] for c in lbc], "o-", label="LBC val NILM fields, median")
    a.plot(n, [c["mean"] for c in lbc], "s--", label="LBC val NILM fields, mean")
    a.plot(
        n, [r["cric_val"]["far_per_field"] for r in rows], "^:", label="CRIC val, far calls/field"
    )
    a.set(xlabel="NILM fields signed out by the lab (N)", ylabel="abnormal calls per field")
    a.set_title("False alarms: LBC NILM fields (and CRIC, the cost)")
    a.legend()
    b.plot(n, [r["lbc_val"]["auc_max_cell"] for r in rows], "o-", label="LBC val, max cell")
    b.plot(n, [r["lbc_val"]["auc_top3_mean"] for r in rows], "s--", label="LBC val, top-3 mean")
    b.plot(n, [r["cric_val"]["recall_30px"] for r in rows], "^:", label="CRIC val recall @30px")
    b.set(xlabel="NILM fields signed out by the lab (N)", ylabel="value", ylim=(0, 1.02))
    b.set_title("Field AUC (LBC) and abnormal-cell recall (CRIC)")
    b.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="25,50,100,180", help="cumulative NILM sign-outs")
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per stage")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "nilm_loop")
    ap.add_argument("--seed", type=int, default=0, help="order in which the lab meets the fields")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = ap.parse_args()
    data_dir = Path(os.environ.get("PAPREVIEW_DATA_DIR", ROOT.parent / "shared" / "data"))
    data_dir = data_dir.resolve()
    os.environ["PAPREVIEW_DATA_DIR"] = str(data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = sorted({int(v) for v in args.n.split(",")})
    with tempfile.TemporaryDirectory(prefix="papreview-loop-") as tmp_name:
        tmp = Path(tmp_name)
        _setup(tmp / "media", args.epochs, args.threads)
        import random

        from papreview.registry.services import model_version_register_checkpoint

        start = tmp / "classifier_cric_only.pt"
        blob = subprocess.run(
            ["git", "show", f"{CRIC_ONLY_CLASSIFIER}:inference/weights/classifier.pt"],
            cwd=ROOT, check=True, capture_output=True,
        ).stdout  # fmt: skip
        start.write_bytes(blob)
        for stage, path in (
            ("detector", ROOT / "inference" / "weights" / "detector.pt"),
            ("classifier", start),
        ):
            model_version_register_checkpoint(stage=stage, path=path, activate=True)
        people = _people()
        nilm, images = _lbc_fields(data_dir)
        random.Random(args.seed).shuffle(nilm)
        if steps[-1] > len(nilm):
            raise SystemExit(f"the LBC train part holds {len(nilm)} NILM fields, not {steps[-1]}")
        rows = [{"n": 0, "gate": None, **_evaluate(args.out, "n000", data_dir)}]
        print(json.dumps(rows[-1]), flush=True)
        done = 0
        for n in steps:
            t0 = time.monotonic()
            cleared = _lab_signs_out(nilm[done:n], images, tmp, people)
            t_lab = time.monotonic() - t0
            job = _export_and_retrain(n, people)
            t_train = time.monotonic() - t0 - t_lab
            gate = _activate(job, people)
            row = {
                "n": n,
                "cleared_calls": cleared,
                "lab_seconds": round(t_lab, 1),
                "export_and_retrain_seconds": round(t_train, 1),
                "fusion": job.comparison.get("fusion", {}).get("used"),
                "gate": gate,
                **_evaluate(args.out, f"n{n:03d}", data_dir),
            }
            rows.append(row)
            done = n
            print(json.dumps(row), flush=True)
        (args.out / "nilm_loop.json").write_text(json.dumps(rows, indent=2))
        _plot(rows, args.out / "nilm_loop.png")
    print(f"wrote {args.out / 'nilm_loop.json'} and {args.out / 'nilm_loop.png'}")
    header = f"{'N':>4} {'calls/NILM median':>18} {'mean':>6} {'AUC max':>8} {'AUC top3':>9}"
    print(header + f" {'CRIC recall30':>13} {'CRIC far/field':>15}")
    for r in rows:
        lbc, cric = r["lbc_val"], r["cric_val"]
        print(
            f"{r['n']:>4} {lbc['calls_per_nilm_field']['median']:>18.1f} "
            f"{lbc['calls_per_nilm_field']['mean']:>6.2f} {lbc['auc_max_cell']:>8.3f} "
            f"{lbc['auc_top3_mean']:>9.3f} {cric['recall_30px'] or 0:>13.3f} "
            f"{cric['far_per_field'] or 0:>15.2f}"
        )


if __name__ == "__main__":
    main()
