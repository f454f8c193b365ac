"""The FastAPI ranking service. Start it with `recsys serve` or `uvicorn --factory service.app:create_app`."""
