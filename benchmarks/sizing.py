"""How many slides an hour one CPU worker analyses, for field images and a whole-slide image.
Prints the figures of the README's sizing table. Not a test.

    .venv/bin/python benchmarks/sizing.py [--fields 20] [--wsi-side 40000] [--threads 0]

One worker = one process running the two-stage pipeline (the committed default weights, as a
worker loads them) with `--threads` torch threads (0: every core of this machine). Field images:
CRIC images from PAPREVIEW_DATA_DIR when present (synthetic 1376x1020 fields otherwise), the
median time per image after one warm-up. Whole-slide image: a synthetic pyramidal TIFF of
--wsi-side x --wsi-side pixels (0.25 um/px, written once into --work-dir and reused), one timed
analysis. The time is the pipeline's (read, detect, classify); a job adds its database writes and
queueing on top (benchmarks/bench_analysis.py measures them end to end: tens of ms per slide).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fields(n: int, out: Path) -> tuple[list[Path], str]:
    data_dir = Path(os.environ.get("PAPREVIEW_DATA_DIR", ROOT.parent / "shared" / "data"))
    cric = sorted((data_dir / "cric" / "images").glob("*.jpg"))
    if len(cric) >= n:
        return cric[:n], f"CRIC field images ({cric[0].parent})"
    from PIL import Image

    from testkit.images import field_image

    paths = []
    for seed in range(n):
        path = out / f"field-{seed}.png"
        Image.fromarray(field_image(1376, 1020, seed=seed)).save(path)
        paths.append(path)
    return paths, "synthetic 1376x1020 fields"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--wsi-side", type=int, default=40_000, help="0: no whole-slide image")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    import torch

    from inference.interface import open_analyser
    from inference.synthetic import write_pyramidal_tiff

    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    analyser = open_analyser(device="cpu", prefetch=2 * 8, max_pixels=2_000_000_000)
    print(
        f"CPU worker: {torch.get_num_threads()} torch threads on {cores} cores "
        f"(load average {os.getloadavg()[0]:.1f}); committed default weights"
    )
    if args.fields:
        paths, source = _fields(args.fields, Path(tempfile.mkdtemp(prefix="sizing-")))
        analyser.analyse(paths[0])  # warm-up
        times = []
        for path in paths:
            t = time.perf_counter()
            analyser.analyse(path)
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        print(
            f"field images ({len(paths)} x {source}): median {median:.2f} s per image "
            f"(min {min(times):.2f}, max {max(times):.2f}) = {3600 / median:.0f} slides/hour"
        )
    if args.wsi_side:
        side = args.wsi_side
        args.work_dir.mkdir(parents=True, exist_ok=True)
        path = args.work_dir / f"sizing-wsi-{side}.tiff"
        if not path.is_file():
            t = time.perf_counter()
            write_pyramidal_tiff(path, side, side, levels=int(math.log2(side / 512)) + 1)
            size_gb = path.stat().st_size / 1e9
            print(f"wrote {path} ({size_gb:.1f} GB) in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        result = analyser.analyse(path)
        elapsed = time.perf_counter() - t
        timings = {k: round(v, 1) for k, v in result.timings.items()}
        print(
            f"whole-slide image {side}x{side} px: {elapsed:.0f} s "
            f"= {3600 / elapsed:.2f} slides/hour; {len(result.cells)} cells; timings {timings}"
        )


if __name__ == "__main__":
    main()
