"""Plain helpers the tests import (fixtures live in the conftest files).

- api.py: what a test does through an app: upload, poll, look into DATA_DIR, serve it over real HTTP;
- problems.py: what every refusal must look like (problem+json, nothing leaked, nothing left behind);
- http.py: raw HTTP over a socket, for requests the test client cannot express.

In tools/, because the bench uses them too: the service in a subprocess
(service_process.py, the `start_service` fixture) and damaged or oversized
videos and JPEGs (hostile_media.py).
"""
