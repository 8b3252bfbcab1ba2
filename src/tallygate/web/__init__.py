"""Dashboard pages: Jinja2 templates and vendored static assets."""
