"""HTTP: the app factory, the asynchronous and legacy blueprints, uploads, errors, OpenAPI and the web page.

The top layer; imports every layer below it, and nothing imports it but the entry points.
"""
