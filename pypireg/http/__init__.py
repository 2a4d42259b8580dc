"""HTTP: the site and streaming request, the route table, and the routes by protocol.

It parses requests and renders answers; rules live in domain/, access
decisions in access.py, SQL in storage/.
"""
