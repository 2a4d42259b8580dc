"""The PyPI protocol: legacy upload, the simple index, files, yanking, the JSON API."""
