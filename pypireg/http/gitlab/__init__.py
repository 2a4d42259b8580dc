"""GitLab's REST APIs: packages and deploy tokens."""
