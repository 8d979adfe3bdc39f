"""The shop's redaction hook (``CONTINUUM["REDACT"]``): what the admin must never display."""

from continuum_django.redaction import mask_keys

secrets = mask_keys("card_number", "cvc", "password")
