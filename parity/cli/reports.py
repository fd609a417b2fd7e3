"""The reports of the verdict commands (check, check-book, golden verify): printed, and written
as the one --json schema, never over a file that is not such a report."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from npgpt.errors import NpgptError
from npgpt.files import atomic_write
from parity.report import Report


def write_json(path: str, config: dict, implementation: str, source: str, reports: list[Report]) -> None:
    """The one --json schema of check and golden verify (docs/adapters.md), written atomically."""
    payload = {
        "config": config,
        "implementation": implementation,
        "reference": "npgpt",
        "source": source,
        "reports": [
            {
                "dtype": r.dtype,
                "ok": r.ok,
                "notes": r.notes,
                "worst": r.worst(),
                "rows": [dataclasses.asdict(c) for c in r.rows],
            }
            for r in reports
        ],
    }
    text = json.dumps(payload, indent=1, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def check_report_path(path: str | None, key: str = "reports", what: str = "npgpt check") -> None:
    """The report may replace an earlier ``what`` report (a JSON object with ``key``), never another
    file, and its directory must be writable; nothing is created until the report is written
    (atomically)."""
    if not path:
        return
    path = Path(path)
    if path.is_dir():
        raise NpgptError(f"--json {path}: is a directory; give a file name")
    if path.exists():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            earlier = None
        if not (isinstance(earlier, dict) and key in earlier):
            raise NpgptError(f"--json {path}: exists and is not an {what} report; choose another path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise NpgptError(f"--json {path}: the directory {parent} does not exist; create it or choose another path")
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        raise NpgptError(f"--json {path}: cannot write in {parent} ({exc.strerror}); choose another path") from None


def print_report(report: Report, dtype: str, seconds: float | None, quiet: bool) -> None:
    took = "" if seconds is None else f" in {seconds:.1f} s"
    print(f"\n== {dtype}: {len(report.rows)} tensors compared{took} ==")
    if quiet:
        print(report.summary())
    else:  # every tensor, then the per-component summary: the verdict and what it rests on come last
        print(report.table())
        print(f"\n-- {dtype} by component")
        print(report.summary(notes=False))
    worst = ", ".join(f"{k} {a:.1e}/{r:.1e}" for k, (a, r) in report.worst().items())
    print(f"largest error by kind (abs/rel): {worst}")
    first = report.first_failure
    if first is None:
        print(f"{dtype}: PASS, all {len(report.rows)} within tolerance")
    else:
        n_bad = sum(not r.ok for r in report.rows)
        print(f"{dtype}: FAIL, {n_bad} outside tolerance; first diverging tensor: {first.name}")
