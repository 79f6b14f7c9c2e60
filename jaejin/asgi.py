"""ASGI entry point for uvicorn/gunicorn: `uvicorn jaejin.asgi:app`."""

import gc

from jaejin.app import create_app

app = create_app()
# Everything built so far (modules, routes, schemas, mappers) lives as long as the process:
# moved out of the collector's sight, a full collection no longer walks those ~200,000 objects
# each time requests have promoted enough of their own (measured on a batch of 1,000 readings:
# 88 -> 53 us of server CPU per reading).
gc.freeze()
