"""The web page (``/ui``): server-rendered HTML for reading runs and rendered fields.

Jinja2 templates and static files ship in this package; there is no front-end build
step, and every page works with JavaScript off (only the copy buttons need it).
"""
