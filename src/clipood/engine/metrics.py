"""Append-only metric records: JSON lines in ``metrics.jsonl`` and TensorBoard scalars.

Each record is one JSON object with ``step`` and ``split`` (``train``, ``val`` or
``test``) keys. TensorBoard gets every other number as ``<split>/<key>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipood.engine.run_folder import write_text_atomic


def read_records(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A line cut short by a crash during its append; it is logged again on resume.
            continue
    return records


class MetricsLog:
    """Write metric records for a run, continuing after ``start_step`` on resume.

    Records after ``start_step`` left by an interrupted run are dropped (they will be
    logged again), and TensorBoard events after it are purged.
    """

    def __init__(self, metrics_path: Path, tensorboard_dir: Path | None, start_step: int = 0):
        self.path = Path(metrics_path)
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= start_step]
        self.records: list[dict] = kept
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=start_step + 1)

    def log(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
