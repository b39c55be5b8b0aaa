"""Models are created per test by ``tests.django_app.settings.make_model``."""
