"""Streamed CSV and NDJSON downloads (search results, the audit trail): rows are written as
they are read, and CSV cells that a spreadsheet would run as a formula are neutralised."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime

from django.http import Http404, StreamingHttpResponse

FORMATS = ("csv", "ndjson")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """Spreadsheets run cells that start like a formula: attacker-chosen text must not."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class _Line:
    def write(self, value):
        return value


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise Http404("export as .csv or .ndjson")


def download(rows: Iterable[dict], fmt: str, name: str) -> StreamingHttpResponse:
    """A streamed attachment `crossedge-<name>-<time>.<fmt>` of flat dicts (CSV columns are the
    first row's keys)."""
    check_format(fmt)
    if fmt == "csv":
        writer = csv.writer(_Line())

        def lines():
            header = None
            for row in rows:
                if header is None:
                    header = list(row)
                    yield writer.writerow(header)
                yield writer.writerow([safe_cell(row[k]) for k in header])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    else:
        lines = (json.dumps(row, separators=(",", ":"), default=str) + "\n" for row in rows)
        response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="crossedge-{name}-{stamp}.{fmt}"'
    return response
