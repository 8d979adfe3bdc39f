"""Bounded sections of the run page: one page of rows each, with links that keep the others.

A run may have 100,000 events; the page shows ``PAGE_SIZE`` rows of each section and the
count, and pages through the rest with a query parameter per section (``?events=3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

PAGE_SIZE = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """One page of a section's rows, its total count, and the links around it."""

    page: Page[Any]
    anchor: str
    first_url: str = ""
    previous_url: str = ""
    next_url: str = ""
    last_url: str = ""

    @property
    def count(self) -> int:
        return int(self.page.paginator.count)

    @property
    def paged(self) -> bool:
        return self.page.paginator.num_pages > 1


def section(
    request: HttpRequest, queryset: QuerySet[Any], param: str, anchor: str, size: int = PAGE_SIZE
) -> Section:
    """The page of ``queryset`` that ``request.GET[param]`` names (the first when absent or
    malformed, the last when beyond the end: Django's ``get_page``)."""
    page = Paginator(queryset, size).get_page(request.GET.get(param))

    def url(number: int) -> str:
        query = request.GET.copy()
        query[param] = str(number)
        return f"?{query.urlencode()}#{anchor}"

    last = page.paginator.num_pages
    return Section(
        page=page,
        anchor=anchor,
        first_url=url(1) if page.number > 1 else "",
        previous_url=url(page.previous_page_number()) if page.has_previous() else "",
        next_url=url(page.next_page_number()) if page.has_next() else "",
        last_url=url(last) if page.number < last else "",
    )
