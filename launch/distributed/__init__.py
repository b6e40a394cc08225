"""The Ray edge: the only place Arbor imports Ray (and, for the weight channels, torch.distributed).

- ``placement``: start or join Ray, check that the cluster can hold the request, one placement group.
- ``coordinator``: the run's small shared state (newest weights, stop flag, the actors' board).
- ``channels``: weight channels over the object store (and, in ``collective``, over torch.distributed pairs),
  and the actors' buffer client.
- ``replay_service``: the replay buffer as an async actor whose inserts and samples wait instead of refusing.
- ``actors``: the Ray actor classes, thin wrappers of the plain rollout worker and learner rank.
- ``runtime``: :class:`RayRuntime`, what ``arbor train`` in ``async`` and ``sync`` mode drives.

Everything these wrap (search, the buffer object, the learner, losses, rewards, tasks) is plain Python and
runs in one process as well (``train.mode=local``, ``arbor.launch.local``).
"""
