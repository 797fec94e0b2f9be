"""The `millstream` command line: serve a broker, manage topics, produce and consume."""
