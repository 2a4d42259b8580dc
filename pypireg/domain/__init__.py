"""Pure rules, no I/O: names, versions, file names, tokens, the access policy, upload rules.

Nothing here imports storage, HTTP, the reactor or a database driver
(tests/test_layers.py checks it), so every rule is testable on its own.
"""
