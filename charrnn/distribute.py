"""Data-parallel training with tf.distribute (--strategy), kept out of the training loop.

Its flags (--strategy, --cpu-replicas, --collective-timeout) are in settings.py's
table. The loop asks a Distribution for what it needs; with no strategy (the default),
every answer is the single-process one, so the plain loop reads as if this file
did not exist:

    dist = Distribution.from_flags(args)
    with dist.scope(): model, optimizer = ...      # variables mirrored on every replica
    x = dist.split(x)                              # [BATCH, ...] -> each replica its rows
    step = dist.compile(replica_step)              # runs on every replica, means reduced
    state = dist.gather(state)                     # all rows again, to save them
    reason, used = dist.stop_together(reason, used)  # one stops: all stop; the chief's clock rules
    saved = dist.agree(saved)                      # all learn whether the chief saved

A distributed step computes what one process computes: replica r always trains
the same rows of the batch (r*BATCH/REPLICAS onward) and keeps their RNN state,
draws those rows of the whole batch's dropout masks, and the gradient it applies
is the whole batch's, clipped after the replicas' shares are summed.
"""

import contextlib
import hashlib
import json
import os

import tensorflow as tf

from charrnn import cli

REASONS = 32  # reasons to stop are ints below this (signal numbers among them)


class WorkerLost(Exception):
    """A collective operation failed: another worker died or cannot be reached."""


def make_strategy(args):
    """The tf.distribute strategy of --strategy, or None. Made before anything else
    touches TensorFlow's devices, as both strategies require."""
    if args.strategy == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.cpu_replicas)])
    if args.strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise cli.UsageError(
                "--strategy multiworker needs the cluster in TF_CONFIG: see docs/multiworker.md"
            )
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise cli.UsageError(f"TF_CONFIG is not valid JSON ({e})") from None
        if not names_this_worker(cluster):
            raise cli.UsageError(
                'TF_CONFIG must give the "cluster" and this process\'s "task" in it (its '
                '"type" and "index"): see docs/multiworker.md'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=args.collective_timeout
        )
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except ValueError as e:  # a cluster it cannot train (of parameter servers, say)
            raise cli.UsageError(f"TF_CONFIG: {e}; see docs/multiworker.md") from None
    return None


def names_this_worker(config):
    """Whether TF_CONFIG's JSON (config) has a cluster and, in it, this process's task."""
    if not isinstance(config, dict):
        return False
    cluster, task = config.get("cluster"), config.get("task")
    if not (isinstance(cluster, dict) and isinstance(task, dict)):
        return False
    members, index = cluster.get(task.get("type")), task.get("index")
    return isinstance(members, list) and type(index) is int and 0 <= index < len(members)


class Distribution:
    """A tf.distribute strategy, or none, behind the few questions training asks."""

    def __init__(self, strategy=None):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if strategy else 1
        self.multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.chief = _is_chief(strategy)
        self._local = None  # (first, last + 1) of this worker's replicas: worker_rows

    @classmethod
    def from_flags(cls, args):
        return cls(make_strategy(args))

    def check_batch_size(self, batch_size):
        if batch_size % self.replicas:
            raise cli.UsageError(
                f"--batch-size {batch_size} does not split evenly over "
                f"{self.replicas} replicas: choose a multiple"
            )

    def scope(self):
        """Where variables are made: mirrored on every replica under a strategy."""
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()

    def split(self, values, batch_size=None):
        """values [BATCH, ...] (the whole batch) or this worker's rows of it
        (worker_rows), as a per-replica value: replica r gets rows r*BATCH/REPLICAS up
        to (r+1)*BATCH/REPLICAS, always the same ones, so each replica's rows continue
        its rows of the previous batch. batch_size: BATCH, if values are a worker's."""
        if not self.strategy:
            return values
        each = (batch_size or len(values)) // self.replicas
        first = self.worker_rows(batch_size).start if batch_size else 0

        def share(context):
            r = context.replica_id_in_sync_group
            return tf.convert_to_tensor(values[r * each - first : (r + 1) * each - first])

        return self.strategy.experimental_distribute_values_from_function(share)

    def worker_rows(self, batch_size):
        """The rows of each batch that this worker's replicas train on (a slice: the
        replicas of a worker are numbered one after the other), so that it reads only
        those of the text."""
        if not self.multiworker:
            return slice(0, batch_size)
        first, end = self._local_replicas()
        each = batch_size // self.replicas
        return slice(first * each, end * each)

    def _local_replicas(self):
        """(first, last + 1) of this worker's replica numbers, asked once."""
        if self._local is None:
            local = []
            self.strategy.experimental_distribute_values_from_function(
                lambda context: local.append(context.replica_id_in_sync_group) or tf.zeros(())
            )
            self._local = (min(local), max(local) + 1)
        return self._local

    def gather(self, value):
        """A per-replica value [BATCH/REPLICAS, ...] as the whole batch's [BATCH, ...]."""
        return self.strategy.gather(value, axis=0) if self.strategy else value

    def stop_together(self, reason, used=0.0):
        """(the strongest reason to stop of any worker, the chief's `used`), a
        collective: every worker must ask. All stop after the same step for the same
        reason, or the others would hang. reason: an int below REASONS, 0 to go on;
        used: the share of --time-limit this worker's clock says is used. The
        schedule follows the chief's share on every worker: each worker's own clock
        started a little apart, and learning rates that differ would let the copies
        of the weights drift apart unseen (only the chief's are saved)."""
        if not self.multiworker:
            return reason, used
        first = self._local_replicas()[0]

        # tf.distribute reduces by SUM or MEAN only: count each reason over the
        # workers (a one-hot vector each), then take the highest one counted; the
        # chief's first replica alone adds its share
        def vote(context):
            chiefs = used if self.chief and context.replica_id_in_sync_group == first else 0.0
            return tf.concat([tf.one_hot(int(reason), REASONS), [chiefs]], axis=0)

        votes = self.strategy.experimental_distribute_values_from_function(vote)
        counts = self.strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None).numpy()
        reason = max(i for i, n in enumerate(counts[:REASONS]) if n > 0)
        return int(reason), float(counts[REASONS])

    def agree(self, ok):
        """Whether ok holds on every worker (a collective: every worker must ask), so
        that all take the same path after what only the chief did, such as a save."""
        if not self.multiworker:
            return ok
        failed = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(0.0 if ok else 1.0)
        )
        return not self.strategy.reduce(tf.distribute.ReduceOp.SUM, failed, axis=None).numpy()

    def check_same(self, facts):
        """Raise UsageError, on every worker, unless every worker has the same facts
        ({what: text}): each reads its own copy of the text, and a copy that differs
        trains on other text at the same offsets, or makes other shapes, or ends one
        worker's loop early while the others wait. One collective: every worker asks."""
        if not self.multiworker:
            return
        # 24 bits of each fact's digest (exact in float64, squared too): all replicas
        # hold the same value v iff REPLICAS x sum(v^2) == sum(v)^2
        values = [int(hashlib.sha256(f.encode()).hexdigest()[:6], 16) for f in facts.values()]
        mine = tf.constant([[v, v * v] for v in values], tf.float64)  # [FACTS, 2]
        shared = self.strategy.experimental_distribute_values_from_function(lambda _: mine)
        sums = self.strategy.reduce(tf.distribute.ReduceOp.SUM, shared, axis=None).numpy()
        differ = [f for f, (s, s2) in zip(facts, sums, strict=True) if self.replicas * s2 != s * s]
        if differ:
            raise cli.UsageError(
                f"the workers do not read the same text: their {' and '.join(differ)} "
                "differ; give every worker the same files (and flags)"
            )

    def compile(self, replica_step):
        """The compiled training step: replica_step(x, y, state, step, dropout) ->
        (loss, accuracy, new state), run by every replica on its rows; loss and
        accuracy come back averaged over the replicas, the state per replica."""
        # autograph=False: nothing needs it, and it re-reads the source files when it
        # traces, so editing them during a run could break a later trace
        if not self.strategy:
            return tf.function(replica_step, autograph=False)

        @tf.function(autograph=False)
        def train_step(x, y, state, step, dropout):
            loss, accuracy, state = self.strategy.run(
                replica_step, args=(x, y, state, step, dropout)
            )
            mean = tf.distribute.ReduceOp.MEAN
            loss = self.strategy.reduce(mean, loss, axis=None)
            return loss, self.strategy.reduce(mean, accuracy, axis=None), state

        return train_step

    def rows_of_this_replica(self, batch_size):
        """Inside a step: [first row, BATCH] of this replica's share of the batch, so
        it draws those rows of the whole batch's dropout masks (None: all rows)."""
        if not self.strategy:
            return None
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.stack([replica * (batch_size // self.replicas), batch_size])

    def clip(self, grads, clip_norm):
        """This replica's gradients of its share of the loss, clipped as one process
        would clip the whole batch's: Keras' optimizer sums the replicas' gradients,
        but would clip each share first. So sum them here, clip the sum, and give it
        back evenly shared (a second all-reduce per step: the price of clipping)."""
        if not clip_norm:
            return grads
        if not self.strategy:
            return tf.clip_by_global_norm(grads, clip_norm)[0]
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        total, _ = tf.clip_by_global_norm(total, clip_norm)
        return [g / self.replicas for g in total]


def _is_chief(strategy):
    """Whether this process writes the checkpoints and logs: always, but under
    --strategy multiworker, where only the chief does (the "chief" task, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0
