"""The search service's web app: the HTTP API, media streaming and the page (static files)."""
