"""The `pypireg` admin command: one small handler per subcommand, and the jobs it runs.

Only this package imports from it (tests/test_layers.py checks it).
"""
