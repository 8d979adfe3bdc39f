"""Workflows and activities the test suite runs."""
