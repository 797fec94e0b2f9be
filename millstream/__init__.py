"""Millstream: a Kafka-style event-streaming broker, its Python client and its CLI.

The top-level package holds what clients and brokers share (the record batch format, the
partitioner, the error registry) and the client itself; ``millstream.broker`` is the server.
"""

__version__ = "0.1.0"
