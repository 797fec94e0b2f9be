"""The Kubernetes operator (``millstream.operator``): Cluster, Topic and ConsumerGroup resources
turned into broker pods, partition placements and status.

At its heart is the operator's pure core, functions of (desired spec, observed state) with no
I/O, which the kopf handlers call and the unit tests drive by hand:

* :mod:`.specs` parses custom resource bodies into typed, frozen specs;
* :mod:`.placement` decides which broker serves each partition of a topic;
* :mod:`.resources` builds the Kubernetes manifests a Cluster becomes;
* :mod:`.status` computes what the operator writes into each resource's status;
* :mod:`.plan` and :mod:`.cluster_plan` decide what a reconcile does from what it read
  (adoption, growth, drift; brokers to run, cluster pushes); :mod:`.settings` holds the
  operator's own settings.

Around it, the kopf operator: :mod:`.handlers` registers thin handlers that call
:mod:`.clusters`, :mod:`.topics` and :mod:`.groups`, which read through :mod:`.kube` (the
Kubernetes API) and :mod:`.brokers` (the brokers' HTTP API), decide with the pure core, and
write; :mod:`.runtime` is what they share and :mod:`.main` runs kopf (``millstream operator``).
``.importlinter`` keeps the pure core free of kopf, the Kubernetes client and HTTP.

The operator talks to brokers only over their HTTP API (``millstream.client``); it never imports
the broker, and the broker knows nothing of it (both checked by ``.importlinter``). The folder is
``operator/`` but the package is ``millstream.operator``: the standard library owns ``operator``.
"""
