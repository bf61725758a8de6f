"""The web: admin pages, subscriber self-service pages and the JSON API."""

from dispatch.web.app import create_app

__all__ = ["create_app"]
