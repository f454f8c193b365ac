"""The test suite. A package, so that tests/service is `tests.service` and never shadows the `service` app package."""
