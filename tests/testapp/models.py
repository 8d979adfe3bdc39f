"""Models the test suite's activities write to."""

from django.db import models


class LedgerEntry(models.Model):
    """A row a transactional activity writes (tests/testapp/txn.py); deliberately without a
    unique constraint, so that a body that ran twice would leave two."""

    order = models.CharField(max_length=100)
    amount = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.order}: {self.amount}"
