"""Video analysis with a vision-language model: highlights and workout steps, as a service and a command line.

Layers, each importing only those below it (guides/architecture.md):
web -> jobs -> engine -> video, model; `config` and `cancellation` sit under all of them.
"""
