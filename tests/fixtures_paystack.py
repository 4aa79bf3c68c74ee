"""Fixtures for the paystack tests."""
