"""Split (domain-specific) Batch Normalization: statistics per data domain."""

import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.batch_normalization import BatchNormalization
from keras_contrast.layers.ghost_batch_normalization import check_axis_type
from keras_contrast.layers.ghost_batch_normalization import check_int
from keras_contrast.layers.ghost_batch_normalization import check_mask
from keras_contrast.layers.ghost_batch_normalization import check_momentum_and_epsilon
from keras_contrast.layers.ghost_batch_normalization import float_compute_dtype
from keras_contrast.layers.ghost_batch_normalization import group_moments
from keras_contrast.layers.ghost_batch_normalization import normalize
from keras_contrast.layers.ghost_batch_normalization import resolve_axis
from keras_contrast.layers.statistics import current_domain
from keras_contrast.layers.statistics import effective_momentum


@keras_contrast_export("keras_contrast.layers.SplitBatchNormalization")
class SplitBatchNormalization(keras.layers.Layer):
    """Batch normalization with separate statistics for each data domain.

    Each sample carries an integer domain id (clean/adversarial, source/
    target, real/fake, dataset A/B). In training, the samples of domain d
    are normalised with the mean and biased variance of the domain-d
    samples of the batch, and only they update domain d's moving
    statistics (one EMA step per call, as `keras.layers.BatchNormalization`
    on those samples alone). A domain without samples in the batch keeps
    its moving statistics unchanged. In inference, each sample is
    normalised with its own domain's moving statistics. This keeps BN from
    mixing the statistics of non-i.i.d. populations (docs/design.md §4,
    "Separate BN").

    The per-domain state lives in `domain_layers`, one
    `keras_contrast.layers.BatchNormalization` per domain (their
    `moving_mean` / `moving_variance`, and `gamma` / `beta` when
    `separate_affine`), so tools that walk a model's BN layers find them;
    this layer computes all domains at once and assigns their variables.
    With `separate_affine=False` one `gamma` / `beta` of this layer is
    shared by all domains. Inside `keras_contrast.layers.frozen_statistics()`
    no moving statistics are updated. Under a distribution strategy the
    statistics are those of each replica's local domain-d samples, and the
    moving statistics behave as a plain Keras BN's (the same `assign` from
    the replica context).

    Args:
        num_domains: int >= 1.
        axis: int, the channel axis (not the batch axis 0).
        momentum: float in [0, 1], momentum of every domain's moving
            statistics.
        epsilon: float > 0, added to the variance.
        separate_affine: bool. One `gamma`/`beta` per domain (in
            `domain_layers`) instead of one shared pair.
        center: bool, add the offset `beta`.
        scale: bool, multiply by the scale `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer, beta_regularizer,
            gamma_regularizer, beta_constraint, gamma_constraint: as in
            `keras.layers.BatchNormalization`.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: float tensor of rank >= 2.
        training: bool. True: per-domain batch statistics and moving
            averages; False (default): per-domain moving statistics.
        mask: optional tensor shaped like `inputs` without their last
            axis, whatever `axis` is (Keras' BatchNormalization convention);
            masked elements do not count in the statistics.
        domain: the domain of each sample: int ids `(batch,)` (or
            `(batch, 1)`), or one id for the whole batch (Python int or
            scalar int tensor). Ids outside `[0, num_domains)` fail a
            `tf.debugging` assertion; under XLA, which drops assertions,
            those samples' outputs are NaN instead. If None, the
            ids of the enclosing `keras_contrast.layers.domain_scope` are
            used (`keras_contrast.normalization.DomainRoutedModel` sets it);
            without one, a ValueError is raised: there is no default domain.

    Example:
    >>> bn = keras_contrast.layers.SplitBatchNormalization(num_domains=2)
    >>> y_clean = bn(x_clean, training=True, domain=0)
    >>> y_adv = bn(x_adv, training=True, domain=1)  # AdvProp's auxiliary BN
    >>> y = bn(x, training=True, domain=ids)        # ids: int32 (batch,)

    Reference:
        - [Chang et al., 2019, "Domain-Specific Batch Normalization for
          Unsupervised Domain Adaptation"](https://arxiv.org/abs/1906.03950)
        - [Xie et al., 2020, "Adversarial Examples Improve Image
          Recognition"](https://arxiv.org/abs/1911.09665)
        - [Wu and Johnson, 2021, "Rethinking 'Batch' in BatchNorm"](
          https://arxiv.org/abs/2105.07576)
    """

    def __init__(
        self,
        num_domains,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        separate_affine=False,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_domains = check_int("num_domains", num_domains, 1)
        check_axis_type(axis)
        check_momentum_and_epsilon(momentum, epsilon)
        if not isinstance(separate_affine, bool):
            raise ValueError(f"`separate_affine` must be a bool, got {separate_affine!r}.")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.separate_affine = separate_affine
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.supports_masking = True
        affine = self._affine_config() if separate_affine else {"center": False, "scale": False}
        self.domain_layers = [
            BatchNormalization(
                axis=self.axis,
                momentum=self.momentum,
                epsilon=self.epsilon,
                moving_mean_initializer=keras.initializers.serialize(
                    self.moving_mean_initializer
                ),
                moving_variance_initializer=keras.initializers.serialize(
                    self.moving_variance_initializer
                ),
                dtype=self.dtype_policy,
                name=f"{self.name}_domain_{index}",
                **affine,
            )
            for index in range(self.num_domains)
        ]
        self.gamma = None
        self.beta = None

    def _affine_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": serialize(self.beta_initializer),
            "gamma_initializer": serialize(self.gamma_initializer),
            "beta_regularizer": serialize(self.beta_regularizer),
            "gamma_regularizer": serialize(self.gamma_regularizer),
            "beta_constraint": serialize(self.beta_constraint),
            "gamma_constraint": serialize(self.gamma_constraint),
        }

    def build(self, input_shape):
        axis = resolve_axis(self.axis, input_shape)
        for layer in self.domain_layers:
            layer.build(input_shape)
        if self.separate_affine:
            return
        shape = (input_shape[axis],)
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )

    def compute_output_shape(self, input_shape):
        return input_shape

    def _domain_ids(self, domain, inputs):
        """int32 `(batch,)` ids, checked (statically when possible, else by
        assertions that run with the graph)."""
        batch_size = tf.shape(inputs)[0]
        if domain is None:
            domain = current_domain()
        if domain is None:
            raise ValueError(
                "SplitBatchNormalization needs `domain`: pass `domain=` (int ids "
                "of shape (batch,) or one int) or call it inside "
                "`keras_contrast.layers.domain_scope(ids)` (as "
                "`keras_contrast.normalization.DomainRoutedModel` does)."
            )
        if isinstance(domain, bool):
            raise ValueError(f"`domain` must be int ids, got {domain!r}.")
        if isinstance(domain, numbers.Integral):
            if not 0 <= domain < self.num_domains:
                raise ValueError(
                    f"`domain` = {domain} is out of range [0, num_domains="
                    f"{self.num_domains})."
                )
            return tf.fill([batch_size], tf.constant(int(domain), tf.int32))
        domain = tf.convert_to_tensor(domain)
        if not domain.dtype.is_integer:
            raise ValueError(f"`domain` must hold integer ids, got dtype {domain.dtype.name}.")
        rank = domain.shape.rank
        if rank == 2 and domain.shape[1] == 1:
            domain = domain[:, 0]
        elif rank not in (0, 1):
            raise ValueError(
                "`domain` must be a scalar or have shape (batch,) or (batch, 1), "
                f"got shape {domain.shape}."
            )
        if rank != 0 and None not in (domain.shape[0], inputs.shape[0]):
            if domain.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"`domain` has {domain.shape[0]} ids but `inputs` has "
                    f"{inputs.shape[0]} samples: one id per sample is needed."
                )
        static = None if isinstance(domain, tf.Variable) else tf.get_static_value(domain)
        if static is not None:
            # The static counterpart of the range assertions below, which
            # XLA drops (docs/checks.md).
            outside = np.asarray(static).reshape(-1)
            outside = outside[(outside < 0) | (outside >= self.num_domains)]
            if outside.size:
                raise ValueError(
                    f"`domain` ids must be in [0, num_domains={self.num_domains}), got "
                    f"{outside[0]}."
                )
        domain = tf.cast(domain, tf.int32)
        if rank == 0:
            domain = tf.fill([batch_size], domain)
        checks = [
            tf.debugging.assert_equal(
                tf.size(domain),
                batch_size,
                message="`domain` must have one id per sample of `inputs`.",
            ),
            tf.debugging.assert_non_negative(
                domain, message="`domain` ids must be >= 0."
            ),
            tf.debugging.assert_less(
                domain,
                tf.constant(self.num_domains, tf.int32),
                message=f"`domain` ids must be < num_domains={self.num_domains}.",
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(domain)

    def _stacked(self, name):
        return tf.stack([tf.convert_to_tensor(getattr(l, name)) for l in self.domain_layers])

    def _affine(self, ids):
        """gamma and beta, `(channels,)` shared or `(batch, channels)` per
        sample's domain; None when disabled."""
        if not self.separate_affine:
            return (
                self.gamma if self.scale else None,
                self.beta if self.center else None,
            )
        gamma = tf.gather(self._stacked("gamma"), ids) if self.scale else None
        beta = tf.gather(self._stacked("beta"), ids) if self.center else None
        return gamma, beta

    def call(self, inputs, training=None, mask=None, domain=None):
        mask = check_mask(inputs, mask)
        dtype = float_compute_dtype(inputs)
        inputs = tf.cast(inputs, dtype)
        axis = self.axis % inputs.shape.rank
        ids = self._domain_ids(domain, inputs)
        if training and self.trainable:
            mean, variance, count = group_moments(inputs, ids, self.num_domains, axis, mask)
            self._update_moving_statistics(mean, variance, count, dtype)
        else:
            mean = tf.cast(self._stacked("moving_mean"), dtype)
            variance = tf.cast(self._stacked("moving_variance"), dtype)
        gamma, beta = self._affine(ids)
        # XLA compiles the id assertions away (and clamps gathers): poison
        # the statistics of out-of-range samples so their outputs are NaN.
        valid = tf.logical_and(ids >= 0, ids < self.num_domains)[:, None]
        outputs = normalize(
            inputs,
            tf.where(valid, tf.gather(mean, ids), tf.constant(float("nan"), dtype)),
            tf.gather(variance, ids),
            gamma,
            beta,
            self.epsilon,
            axis,
        )
        return tf.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, variance, count, dtype):
        # Per domain: m ← momentum·m + (1 - momentum)·batch statistic, only
        # where the domain (channel) saw elements; the empty domains' 0/0
        # statistics are never mixed in.
        momentum = effective_momentum(self.momentum, dtype)
        seen = count > 0
        for index, layer in enumerate(self.domain_layers):
            for variable, value in (
                (layer.moving_mean, mean[index]),
                (layer.moving_variance, variance[index]),
            ):
                old = tf.cast(variable, dtype)
                new = tf.where(seen[index], old * momentum + value * (1.0 - momentum), old)
                variable.assign(tf.cast(new, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_domains": self.num_domains,
                "axis": self.axis,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "separate_affine": self.separate_affine,
                "center": self.center,
                "scale": self.scale,
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": keras.initializers.serialize(
                    self.moving_mean_initializer
                ),
                "moving_variance_initializer": keras.initializers.serialize(
                    self.moving_variance_initializer
                ),
                "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
                "beta_constraint": keras.constraints.serialize(self.beta_constraint),
                "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
            }
        )
        return config
