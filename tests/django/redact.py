"""The redaction hooks the admin tests configure with ``CONTINUUM["REDACT"]``."""

import re
from typing import Any

from continuum_django.redaction import SECRET_MARK, mask_keys

secrets = mask_keys("card_number")
CARD = re.compile(r"\d{13,19}")


def everywhere(value: Any) -> Any:
    """Mask ``card_number`` values and any card-like digits in free text, at any depth."""
    if isinstance(value, str):
        return CARD.sub(SECRET_MARK, value)
    if isinstance(value, dict):
        return {k: SECRET_MARK if k == "card_number" else everywhere(v) for k, v in value.items()}
    if isinstance(value, list):
        return [everywhere(item) for item in value]
    return value
