"""Storage layer: all SQL and all blob files live below this package."""
