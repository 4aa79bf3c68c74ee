"""Fixtures for the checkout tests."""
