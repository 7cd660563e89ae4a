"""Paging on the web page: where one page of a list sits in the whole."""

from __future__ import annotations

import dataclasses
from typing import Any

from taskexec import schemas


@dataclasses.dataclass(frozen=True)
class Pager:
    """Where one page of a list sits in the whole, for the previous/next links."""

    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, page: schemas.Page[Any]) -> Pager:
        """The pager of a service's page."""
        return cls(total=page.total, limit=page.limit, offset=page.offset)

    @property
    def first(self) -> int:
        """The 1-based position of the page's first item (0 when there is none)."""
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        """The 1-based position of the page's last item."""
        return min(self.offset + self.limit, self.total)

    @property
    def previous(self) -> int | None:
        """The offset of the page before, if any."""
        return max(self.offset - self.limit, 0) if self.offset > 0 else None

    @property
    def next(self) -> int | None:
        """The offset of the page after, if any."""
        return self.offset + self.limit if self.offset + self.limit < self.total else None
