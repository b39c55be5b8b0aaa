"""A Django app for our tests: models are made per test (unique tables) by ``make_model``."""
