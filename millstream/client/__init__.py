"""Python client for Millstream: producer, consumer and admin, async and sync."""
