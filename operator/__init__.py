"""The Kubernetes operator (``millstream.operator``): Cluster, Topic and ConsumerGroup resources
turned into broker pods, partition placements and status.

This package is the operator's pure core, functions of (desired spec, observed state) with no
I/O, which the kopf handlers call and the unit tests drive by hand:

* :mod:`.specs` parses custom resource bodies into typed, frozen specs;
* :mod:`.placement` decides which broker serves each partition of a topic;
* :mod:`.resources` builds the Kubernetes manifests a Cluster becomes;
* :mod:`.status` computes what the operator writes into each resource's status.

The operator talks to brokers only over their HTTP API (``millstream.client``); it never imports
the broker, and the broker knows nothing of it (both checked by ``.importlinter``). The folder is
``operator/`` but the package is ``millstream.operator``: the standard library owns ``operator``.
"""
