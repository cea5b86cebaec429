"""The one exception type for bad input data.

Every reader, parser and schema check raises `DataError` for input it cannot use, and the message
always says where: which file, which row (1-based line of a JSONL/CSV file, or 0-based index of a
JSON array / Parquet table / HF dataset, labelled as such), which field, and the valid choices.
It subclasses ValueError so callers that only know "bad value" still catch it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DataError(ValueError):
    """Bad input data, with where it is.

    `row` is an int (printed as "row index N", 0-based) or a string the caller already labelled,
    e.g. "line 7" for JSONL where the 1-based line number is what an editor shows.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | str | None = None,
        field: str | None = None,
        choices: Iterable[str] | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.row = row
        self.field = field
        self.choices = tuple(choices) if choices is not None else None
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if self.row is not None:
            where.append(f"row index {self.row}" if isinstance(self.row, int) else str(self.row))
        if self.field is not None:
            where.append(f"field {self.field!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.choices is not None:
            text += f" (valid: {', '.join(repr(c) for c in self.choices)})"
        return text

    def __reduce__(self):
        # Keyword-only arguments would be lost by the default pickling, and Ray pickles exceptions
        # raised inside tasks.
        return (_rebuild, (self.message, self.path, self.row, self.field, self.choices))


def _rebuild(message, path, row, field, choices) -> DataError:
    return DataError(message, path=path, row=row, field=field, choices=choices)
