"""The vision-language model: loaded once with this CPU's speed-ups, owned by one thread, prompts within its context.

Imports only `config` and `cancellation` from the package.
"""
