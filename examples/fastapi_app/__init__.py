"""A small FastAPI service on cachewise.aio (see docs/fastapi.md)."""
