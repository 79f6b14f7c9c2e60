"""ASGI entry point for uvicorn/gunicorn: `uvicorn jaejin.asgi:app`."""

from jaejin.app import create_app

app = create_app()
