"""The Packages web pages, at GitLab's web URLs."""
