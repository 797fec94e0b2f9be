"""The Millstream broker: a plain process with a data directory and an HTTP API.

``storage`` keeps partition logs on disk; ``http`` serves them; ``server`` wires the two
together with the process lifecycle. Nothing here knows about Kubernetes.
"""
