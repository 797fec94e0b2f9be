"""Consumer groups: the coordinator, one state machine per group, durable committed offsets.

Sits beside storage and below HTTP: it uses the log manager (topics, offsets, the internal log)
and knows nothing of how members reach it. See ``docs/consumer-groups.md``.
"""
