"""Cluster metadata: which brokers form the cluster and which of them serves each partition.

Sits beside storage and below HTTP, like groups. A standalone broker has none and serves every
partition of its topics. In a cluster, the operator pushes the metadata over the admin API
(``broker/http/admin.py``); the broker persists it in its data directory and replays it at
start, so a restart needs no operator:

- :mod:`~millstream.broker.cluster.metadata`: the metadata as values (brokers, topics, each
  partition's broker, epochs), how pushes are checked and combined, who coordinates a group.
- :mod:`~millstream.broker.cluster.store`: ``cluster.json``, its format and atomic rewrite.
- :mod:`~millstream.broker.cluster.node`: this broker in the cluster: applies pushes to the
  store and to the :class:`~millstream.broker.storage.log_manager.LogManager`, and says whether
  a partition or a group is served here or which broker to go to.
- :mod:`~millstream.broker.cluster.moves`: moving a partition between brokers as values: the
  moves onto this broker, the retired copies of partitions that left, the state machine.
- :mod:`~millstream.broker.cluster.mover`: the copy of each move, from its source, through a
  ``Source`` that the HTTP layer implements; :mod:`~millstream.broker.cluster.throttle` paces it.

Knows nothing of HTTP, of Kubernetes, or of how other brokers are reached (the mover's
``Source`` protocol is implemented by ``broker/http/move_source.py``).
"""
