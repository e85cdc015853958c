"""Helpers shared by the test suite and the benchmarks (never imported by the app):
random checkpoints, real Celery worker processes, synthetic field images, the browser
(a pytest plugin), concurrent reviewers and the production-like stack they talk to."""
