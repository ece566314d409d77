"""What happens to an upload after its request: sessions, files, expiry, the queue, the analysis child process.

No Flask; imports `engine` and the layers below it.
"""
