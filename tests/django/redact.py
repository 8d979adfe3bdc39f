"""The redaction hook the admin tests configure with ``CONTINUUM["REDACT"]``."""

from continuum_django.redaction import mask_keys

secrets = mask_keys("card_number")
