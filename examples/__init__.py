"""Runnable examples of cachewise in applications (each is tested in tests/)."""
