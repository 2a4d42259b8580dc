"""Accepting one distribution: bounded archive reading, then the rules, then storage.

Shared by the upload API and `pypireg import`, so an imported file is
validated exactly as an uploaded one.
"""
