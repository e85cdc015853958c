"""Settings split: `base` (development and `make run`), `test` (pytest), `production`."""
