"""Fixtures for the shop tests."""
