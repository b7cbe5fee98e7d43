"""Contrastive gradient cache: a big contrastive batch with the backward
memory of one chunk (docs/design.md §6)."""

import threading

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.layers.split_batch_normalization import SplitBatchNormalization
from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.step import TrainStep
from keras_contrast.training.step import call_compute_loss
from keras_contrast.training.step import training_loss

# Layers whose `momentum` attribute drives a moving-statistics update that
# pass 3 must not repeat.
_STATISTICS_LAYERS = (keras.layers.BatchNormalization, SplitBatchNormalization)


def _check_count(name, value):
    if value is None:
        return None
    check_positive_int(value, name, "an integer > 0")
    return value


def _flatten_layers(model):
    """Every layer of `model` (itself included), depth first, deduplicated."""
    found, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        children = list(getattr(layer, "_layers", None) or [])
        children += [v for v in vars(layer).values() if isinstance(v, keras.layers.Layer)]
        stack.extend(reversed(children))
    return found


def _seed_generators(model):
    """The `keras.random.SeedGenerator`s of every layer of `model`."""
    generators, seen = [], set()
    for layer in _flatten_layers(model):
        candidates = list(getattr(layer, "_seed_generators", None) or [])
        for value in vars(layer).values():
            if isinstance(value, (list, tuple)):
                candidates.extend(value)
            else:
                candidates.append(value)
        for candidate in candidates:
            if isinstance(candidate, keras.random.SeedGenerator) and id(candidate) not in seen:
                seen.add(id(candidate))
                generators.append(candidate)
    return generators


class _FrozenMomenta:
    """Sets `momentum` (and `renorm_momentum`) of BN layers to 1 while pass 3
    is traced: `m ← m·1 + batch·0` leaves the moving statistics as pass 1 left
    them. The value is frozen into the trace, which is built once.

    MirroredStrategy traces each replica in its own thread, the threads
    taking turns at every cross-replica call, so replicas may enter and leave
    pass 3 interleaved: a shared depth count makes the first entry save the
    momenta and the last exit restore them.
    """

    _lock = threading.Lock()

    def __init__(self, model):
        self._layers = [
            layer for layer in _flatten_layers(model) if isinstance(layer, _STATISTICS_LAYERS)
        ]
        self._depth = 0
        self._saved = []

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = []
                for layer in self._layers:
                    renorm = getattr(layer, "renorm_momentum", None)
                    self._saved.append((layer, layer.momentum, renorm))
                    layer.momentum = 1.0
                    if renorm is not None:
                        layer.renorm_momentum = 1.0
            self._depth += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for layer, momentum, renorm in self._saved:
                    layer.momentum = momentum
                    if renorm is not None:
                        layer.renorm_momentum = renorm
                self._saved = []
        return False


def _split(structure, sizes):
    """Splits every tensor of a nested structure along axis 0 into chunks."""
    flat = keras.tree.flatten(structure)
    num = len(sizes) if isinstance(sizes, (list, tuple)) else sizes.shape[0]
    pieces = [tf.split(tensor, sizes, num=num, axis=0) for tensor in flat]
    return [
        keras.tree.pack_sequence_as(structure, [piece[k] for piece in pieces])
        for k in range(num)
    ]


def _add(accumulated, gradients):
    total = []
    for a, g in zip(accumulated, gradients):
        if g is None:
            total.append(a)
        elif a is None:
            total.append(tf.convert_to_tensor(g))
        else:
            total.append(a + tf.convert_to_tensor(g))
    return total


@keras_contrast_export("keras_contrast.training.GradCache")
class GradCache(TrainStep, keras.Model):
    """Trains an embedding model on a contrastive batch too big for one
    backward pass, with the exact gradient of the big batch (gradient cache,
    Gao et al., 2021; docs/design.md §6).

    A contrastive loss couples every sample to every other one, but its
    gradient factorises: with `h_i = f_θ(x_i)` and `g_i = ∂L/∂h_i` taken on
    cached embeddings, `∇_θ L = ∇_θ Σ_i ⟨h_i, stop_gradient(g_i)⟩`, and the
    surrogate on the right is a sum over samples, so it splits into chunks.
    Each training step:

    1. forwards every chunk without recording gradients (training mode) and
       keeps the embeddings;
    2. computes the compiled loss on all of them (under a `tf.distribute`
       strategy the keras_contrast losses gather every replica's embeddings)
       and `g = ∂L/∂h`, together with the gradient of the loss with respect
       to the weights the loss itself uses (a learnable temperature fed by
       the wrapped model's `compute_loss`, weight regularizers);
    3. forwards each chunk again with gradients and accumulates
       `∇_θ Σ_{i ∈ chunk} ⟨h_i, g_i⟩` (float32), one chunk after another
       (with `reuse_last_chunk`, the last chunk's first forward already
       recorded its backward graph: it back-propagates `g` through that
       graph instead of forwarding again, saving 1/k of a forward pass);
    4. applies the summed gradient once through the optimizer, then calls the
       wrapped model's `after_optimizer_step()` (declared by
       `ContrastiveModel`; a plain Keras model may define one too), e.g. a
       momentum-encoder EMA update, exactly once per step. (`compile` makes
       this wrapper's optimizer a `ContrastiveModel`'s `training_optimizer`,
       with `set_training_optimizer`, so a schedule can read `iterations`.)

    Memory is that of one chunk's backward pass plus the cached embeddings;
    the price is one extra forward pass. The logged `loss` is the true loss
    of step 2, never the surrogate. Under a strategy, the effective batch is
    replicas × chunks × chunk size and the gradient equals that of the
    single-device step on the whole global batch.

    Keras' `gradient_accumulation_steps` (an optimizer argument) is not this:
    it runs one whole training step per micro-batch, each with its own loss,
    and averages their gradients. For a contrastive loss that means each
    micro-batch only sees its own negatives (the loss of a batch of 2b is
    not the sum of two batches of b), whereas here the loss and its
    negatives span the whole batch. Both agree for losses that are means of
    independent per-sample terms (e.g. MSE).

    Chunks: give exactly one of `chunk_size` or `num_chunks`. The chunks are
    unrolled in Python (cross-replica collectives cannot run inside a
    `tf.while_loop`), so their number is fixed when the step is traced:
    - `num_chunks`: each replica's batch is split into `num_chunks` chunks
      of sizes differing by at most one (the first `batch % num_chunks`
      chunks hold one more sample), so any batch of at least `num_chunks`
      samples works, including the smaller last batch of an epoch and a
      batch size only known at run time.
    - `chunk_size`: needs a batch size known when tracing (a `tf.data`
      dataset batched with `drop_remainder=True`), divisible by
      `chunk_size`; otherwise a `ValueError` says to use `num_chunks`.

    Dropout and other random layers: with `replay_dropout=True`, the state of
    every `keras.random.SeedGenerator` of the wrapped model is recorded before
    each chunk's first forward and restored before its second, so both draw
    identical masks (afterwards the states are left as the first passes left
    them). With `False` the second pass draws fresh masks, which makes the
    gradient inexact. Random ops without a `SeedGenerator` are not replayed.

    BatchNorm: every chunk is normalised with its own statistics, in both
    passes, so a model with batch statistics trains as a Ghost-BN model with
    ghost batch = chunk (NBS = chunk size; docs/design.md §4), unless its BN is
    synchronised across replicas. Moving statistics are updated once per
    chunk, in the first pass: during the second pass the `momentum` of every
    BN layer (Keras' `BatchNormalization` and its subclasses, including
    keras_contrast's, and `SplitBatchNormalization`) is 1. Batch
    Renormalization is not exact (its correction reads the moving statistics,
    which pass 3 sees after all chunks' updates).

    Sample weights (`fit(..., sample_weight=w)`) reach the loss of step 2
    and are exact. When the wrapped model overrides `compute_loss`, step 2
    calls that override (for keras_contrast's models it assembles the loss
    with `keras_contrast.training.assemble_loss`: reduction over the global
    batch, weight regularizers divided by the number of replicas, once);
    otherwise Keras' own `compute_loss` of this wrapper, whose regularizers
    are the wrapped model's, scaled the same way. The metrics the wrapped
    model updates itself (`model_metrics`, e.g. MoCo's
    `pretext_accuracy`) are logged with this wrapper's. `predict`,
    `evaluate`, `call` and `export` use the wrapped model.

    Not supported (a `ValueError` says so): losses added inside `call`
    (`add_loss`, activity regularizers), which would come from one chunk
    only. Weight regularizers are exact (step 2 differentiates them).

    Args:
        model: a Keras model (functional or subclassed) mapping inputs to
            embeddings `(batch, views, dim)`. If it overrides
            `compute_loss` (to feed loss-side weights to the loss), that
            override computes the loss, and `compile` shares the compiled
            loss with it.
        chunk_size: int > 0, samples per chunk (per replica).
        num_chunks: int > 0, chunks per replica batch.
        replay_dropout: bool. Replay each chunk's random state in the second
            pass.
        reuse_last_chunk: bool. Keep the last chunk's first-pass graph for
            its backward pass instead of forwarding it again (exact either
            way; saves time, holds one chunk's activations during step 2,
            when no other chunk's are held). See
            `benchmarks/results/gradcache.json` for the measured effect.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:
    >>> encoder = keras.Sequential([keras.layers.Dense(64)])  # (b, 2, d) -> (b, 2, 64)
    >>> model = keras_contrast.training.GradCache(encoder, num_chunks=4)
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.InfoNCE(0.1))
    >>> model.fit(views, batch_size=1024)  # 4 chunks of 256 per step
    >>> embeddings = model.predict(views)  # the wrapped encoder

    Reference:
        Gao, Zhang, Han, Callan. Scaling Deep Contrastive Learning Batch Size
        under Memory Limited Setup. RepL4NLP 2021 (arXiv 2101.06983).
    """

    # Chain the chunks with control dependencies so they run one after
    # another (benchmarks/gradcache_bench.py switches it off to measure what
    # the chaining saves).
    _chain_chunks = True

    def __init__(
        self,
        model,
        chunk_size=None,
        num_chunks=None,
        replay_dropout=True,
        reuse_last_chunk=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
        if (chunk_size is None) == (num_chunks is None):
            raise ValueError(
                "Give exactly one of `chunk_size` or `num_chunks`, got "
                f"chunk_size={chunk_size!r} and num_chunks={num_chunks!r}."
            )
        self.chunk_size = _check_count("chunk_size", chunk_size)
        self.num_chunks = _check_count("num_chunks", num_chunks)
        self.replay_dropout = bool(replay_dropout)
        self.reuse_last_chunk = bool(reuse_last_chunk)
        outputs = getattr(model, "outputs", None)
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            _check_embeddings_shape(outputs[0].shape, "model")
        self.model = model
        self._momenta = None
        if model.built:
            self.built = True

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def export(self, filepath, *args, **kwargs):
        """Exports the wrapped model (what inference runs); see
        `keras.Model.export`."""
        return self.model.export(filepath, *args, **kwargs)

    def get_build_config(self):
        # The wrapped model is what gets built (the train step calls it, not
        # this wrapper), so its build shapes are the ones to save.
        return self.model.get_build_config()

    def build_from_config(self, config):
        if config and not self.model.built:
            self.model.build_from_config(config)
        self.built = self.model.built

    @property
    def metrics(self):
        # Keras leaves out the metrics of a wrapped model (a Trainer of its
        # own); add those it updates itself in `compute_loss` (e.g. MoCo's
        # `pretext_accuracy`), which this step calls.
        metrics = super().metrics
        model = getattr(self, "model", None)  # read before `__init__` sets it
        extra = model.model_metrics if isinstance(model, ContrastiveModel) else []
        return metrics + [m for m in extra if all(m is not n for n in metrics)]

    @property
    def _delegates_loss(self):
        return type(self.model).compute_loss is not keras.Model.compute_loss

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, **kwargs)
        # The wrapped model's per-step hook and per-step randomness read the
        # step count (a momentum schedule, Shuffle BN's seed): this optimizer
        # counts its steps now.
        if isinstance(self.model, ContrastiveModel):
            self.model.set_training_optimizer(self.optimizer)
        if self._delegates_loss and loss is not None:
            # The wrapped model's `compute_loss` reads its own `self.loss`.
            self.model.compile(optimizer=None, loss=loss, loss_weights=loss_weights)

    def compile_from_config(self, config):
        # Keras skips overridden `compile` methods when loading; this one only
        # adds the loss sharing, so it is safe to call.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self._delegates_loss:
            return call_compute_loss(self.model, x, y, y_pred, sample_weight, training)
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def _chunk_sizes(self, x):
        """Chunk sizes of this replica's batch: a list of ints when the batch
        size is static, else an int32 tensor of `num_chunks` sizes."""
        first = keras.tree.flatten(x)[0]
        batch = first.shape[0]
        if self.chunk_size is not None:
            if batch is None:
                raise ValueError(
                    f"GradCache(chunk_size={self.chunk_size}) needs a batch size "
                    "known when the train step is traced, but the batch dimension "
                    "is dynamic. Batch a tf.data dataset with drop_remainder=True, "
                    "or use `num_chunks`, which splits any batch."
                )
            if batch % self.chunk_size:
                raise ValueError(
                    f"The batch of {batch} samples (per replica) does not split "
                    f"into chunks of `chunk_size`={self.chunk_size}. Use a batch "
                    f"size divisible by {self.chunk_size} or `num_chunks`."
                )
            return [self.chunk_size] * (batch // self.chunk_size)
        num = self.num_chunks
        if batch is not None:
            if batch < num:
                raise ValueError(
                    f"The batch of {batch} samples (per replica) is smaller than "
                    f"`num_chunks`={num}."
                )
            base, remainder = divmod(batch, num)
            return [base + 1] * remainder + [base] * (num - remainder)
        batch = tf.shape(first)[0]
        check = tf.debugging.assert_greater_equal(
            batch,
            num,
            message=f"GradCache: a batch (per replica) is smaller than `num_chunks`={num}.",
        )
        with tf.control_dependencies([check]):
            base, remainder = batch // num, batch % num
            return base + tf.cast(tf.range(num) < remainder, tf.int32)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sizes = self._chunk_sizes(x)
        chunks = _split(x, sizes)
        generators = _seed_generators(self.model) if self.replay_dropout else []
        if self._momenta is None:
            self._momenta = _FrozenMomenta(self.model)

        # 1. Forward every chunk without a gradient graph, one after another.
        embeddings, seed_states, last = self._forward_chunks(chunks, generators)
        final_states = [g.state.value * 1 for g in generators]
        y_pred = tf.concat(embeddings, axis=0)
        self.built = self.built or self.model.built

        # 2. The true loss on all cached embeddings; g = ∂L/∂h, and ∂L/∂θ for
        # the weights the loss uses itself (the rest are unconnected: None).
        # (A subclassed model creates its weights during its first forward.)
        trainable_weights = self.trainable_weights
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            scaled_loss = training_loss(self, x, y, y_pred, sample_weight)
        gradients = tape.gradient(scaled_loss, [y_pred] + trainable_weights)
        output_gradient, gradients = gradients[0], gradients[1:]

        if trainable_weights:
            # 3. Second forward per chunk, with gradients of Σ⟨h, g⟩.
            gradients = self._backward_chunks(
                chunks, output_gradient, _split(output_gradient, sizes), seed_states,
                generators, last, gradients, trainable_weights,
            )
            previous = [g for g in gradients if g is not None]
            with tf.control_dependencies(previous):
                for generator, state in zip(generators, final_states):
                    generator.state.assign(state)
            # The barrier makes every update wait for every gradient:
            # otherwise the update of a late layer (which needs only its own
            # gradient) can race the last chunk's backward pass through that
            # layer's weights.
            with tf.control_dependencies(previous):
                gradients = [None if g is None else tf.identity(g) for g in gradients]

        # 4. One optimizer step, the wrapped model's per-step hook, the logs.
        return self.finish_train_step(gradients, trainable_weights, x, y, y_pred, sample_weight)

    def _forward_chunks(self, chunks, generators):
        """Pass 1: each chunk's embeddings, without a gradient graph, and the
        seed generators' states before each chunk.

        With `reuse_last_chunk` (and 2+ chunks) the last chunk's forward
        records its backward graph, which pass 3 then reuses instead of
        forwarding that chunk again: `last` is `(tape, embeddings)`, else
        None.

        Returns:
            `(embeddings, seed_states, last)`.
        """
        reuse = self.reuse_last_chunk and len(chunks) > 1
        embeddings, seed_states, previous, last = [], [], [], None
        for index, chunk in enumerate(chunks):
            with tf.control_dependencies(previous):
                chunk = keras.tree.map_structure(tf.identity, chunk)
                seed_states.append([g.state.value * 1 for g in generators])
                if reuse and index == len(chunks) - 1:
                    with tf.GradientTape() as tape:
                        h = self.model(chunk, training=True)
                    last = (tape, h)
                    h = tf.stop_gradient(h)
                else:
                    h = tf.stop_gradient(self.model(chunk, training=True))
            _check_embeddings_shape(h.shape, "the output of `model`")
            _check_no_call_losses(self.model)
            embeddings.append(h)
            previous = [h] if self._chain_chunks else []
        return embeddings, seed_states, last

    def _backward_chunks(self, chunks, output_gradient, output_gradients, seed_states,
                         generators, last, gradients, variables):
        """Pass 3: adds `∇θ Σ_{i ∈ chunk} ⟨h_i, g_i⟩` of every chunk to
        `gradients`, one chunk after another, each chunk's random state
        replayed and the BN momenta frozen. g already carries the loss scale,
        so the surrogate is not scaled again.

        Returns:
            The summed gradients of `variables`.
        """
        chain = self._chain_chunks
        previous = [output_gradient]
        if last is not None:
            # ∇θ Σ⟨h, g⟩ = Jᵀg: the recorded graph back-propagates g directly.
            last_tape, last_h = last
            last_gradient = tf.cast(output_gradients[-1], last_h.dtype)
            gradients = _add(
                gradients, last_tape.gradient(last_h, variables, output_gradients=last_gradient)
            )
            if chain:
                previous = [g for g in gradients if g is not None]
            chunks, output_gradients, seed_states = (
                chunks[:-1], output_gradients[:-1], seed_states[:-1]
            )
        for chunk, chunk_gradient, states in zip(chunks, output_gradients, seed_states):
            with tf.control_dependencies(previous):
                for generator, state in zip(generators, states):
                    generator.state.assign(state)
                chunk = keras.tree.map_structure(tf.identity, chunk)
                with self._momenta, tf.GradientTape() as tape:
                    h = self.model(chunk, training=True)
                    surrogate = tf.reduce_sum(
                        tf.cast(h, tf.float32)
                        * tf.stop_gradient(tf.cast(chunk_gradient, tf.float32))
                    )
                gradients = _add(gradients, tape.gradient(surrogate, variables))
            previous = [g for g in gradients if g is not None] if chain else [output_gradient]
        return gradients

    def after_optimizer_step(self):
        """Runs the wrapped model's `after_optimizer_step()`: declared (a
        no-op by default) by `ContrastiveModel`; a plain Keras model may
        define a method of that name too."""
        hook = getattr(self.model, "after_optimizer_step", None)
        if callable(hook):
            hook()

    def trained_model(self):
        """The wrapped model, whose weights this step trains."""
        return self.model

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.layers.serialize(self.model),
            "chunk_size": self.chunk_size,
            "num_chunks": self.num_chunks,
            "replay_dropout": self.replay_dropout,
            "reuse_last_chunk": self.reuse_last_chunk,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.layers.deserialize(config["model"], custom_objects=custom_objects)
        return cls(**config)


def _check_no_call_losses(model):
    """Losses added inside `call` would come from the last chunk only."""
    added = sum(len(getattr(layer, "_losses", None) or ()) for layer in _flatten_layers(model))
    if added:
        raise ValueError(
            "GradCache does not support losses added inside `call` (`add_loss`, "
            f"activity regularizers): the wrapped model added {added} such "
            "loss(es), which would come from one chunk only. Weight "
            "regularizers work."
        )


def _check_embeddings_shape(shape, what):
    shape = tf.TensorShape(shape)
    if shape.rank != 3:
        raise ValueError(
            f"GradCache: {what} must produce embeddings of rank 3 "
            f"(batch, views, dim), got shape "
            f"{tuple(shape) if shape.rank is not None else 'unknown'}."
        )
