"""Integrations with frameworks (each an optional extra): ``cachewise.contrib.django``."""
