"""TensorFlow alone: the same gradient, computed twice under MirroredStrategy
with op determinism on, differs in the last bit.

    python tools/repro_mirrored_nondeterminism.py                               # differs
    python tools/repro_mirrored_nondeterminism.py --concat-once                 # identical
    python tools/repro_mirrored_nondeterminism.py --no-arithmetic-optimization  # identical

Only TensorFlow is used. Each replica gathers two (b, d) embedding views
with `ReplicaContext.all_gather` and uses each gathered view three times: in
two `tf.concat([A, B])` (the candidates of the two anchor views, as in a
contrastive loss) and in a row-wise product `A * B` (as DCLW's weight). The
gradient of each gathered view is then the sum of three contributions, two
of them `Slice`s of the concats' gradients (each shares its buffer with the
slice that goes to the other view).

Cause: TensorFlow's CPU `AddN` kernel accumulates into the first input
whose buffer it can take over (`forward_input_to_output_with_shape`) and
moves that input to the front, so it sums `(x0 + x1) + x2` or
`(x2 + x1) + x0` depending on which buffers are still referenced when it
runs, i.e. on thread timing. Grappler's arithmetic optimizer orders the
inputs by name, which puts the aliased `Slice`s first, and the replicas
running concurrently make the timing vary.
`tf.config.experimental.enable_op_determinism()` does not cover it. An
`AddN` of two inputs is always exact (addition commutes), so computing the
concat once (each gathered view then has two contributions) makes the calls
bit-identical; so does disabling the arithmetic optimizer here (the tape's
own input order happens to put a buffer that is always free first).

Measured with TensorFlow 2.21 on 2 shared CPU cores, 2 replicas of 256
rows, dim 128, 30 calls: 7 to 26 of the 29 repeated gradients differ from
the first (by up to 9.5e-7, one ulp of entries up to 7.9; how many depends
on the load); 0 of 29 with either option. keras_contrast's gathered two-view
losses had this structure (the gathered views were concatenated once per
anchor view); they now build the candidates once
(`GlobalBatch.candidates` in `keras_contrast/losses/global_batch.py`),
tested by `tests/distribute/reproducibility_test.py`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="rows per replica")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--concat-once", action="store_true",
                        help="share one concat between the two anchor views")
    parser.add_argument("--no-arithmetic-optimization", action="store_true",
                        help="turn off Grappler's arithmetic optimizer")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    tf.config.experimental.enable_op_determinism()
    if args.no_arithmetic_optimization:
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(args.replicas)])

    rng = np.random.default_rng(0)
    b, n = args.batch, args.batch * args.replicas
    z = rng.standard_normal((n, 2, args.dim)).astype("float32")
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(z[context.replica_id_in_sync_group * b:][:b]))

    def replica_step(local):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            tape.watch(local)
            anchors = (local[:, 0], local[:, 1])
            a = context.all_gather(anchors[0], axis=0)
            c = context.all_gather(anchors[1], axis=0)
            if args.concat_once:
                candidates = [tf.concat([a, c], axis=0)] * 2
            else:
                candidates = [tf.concat([a, c], axis=0), tf.concat([a, c], axis=0)]
            loss = tf.reduce_sum(tf.sin(tf.reduce_sum(a * c, axis=1)))
            for anchor, columns in zip(anchors, candidates):
                logits = tf.matmul(anchor, columns, transpose_b=True) / 0.1
                loss += tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1))
        return tape.gradient(loss, local)

    @tf.function
    def step(values):
        return strategy.run(replica_step, args=(values,))

    def gradient():
        return np.concatenate([g.numpy() for g in strategy.experimental_local_results(
            step(values))])

    first = gradient()
    differences = [float(np.abs(gradient() - first).max()) for _ in range(args.calls - 1)]
    print(f"TensorFlow {tf.__version__}, {args.replicas} replicas x {b} rows, dim {args.dim}, "
          f"concat once: {args.concat_once}, arithmetic optimizer: "
          f"{not args.no_arithmetic_optimization}")
    print(f"{sum(d > 0 for d in differences)} of {len(differences)} repeated calls differ "
          f"from the first; max difference {max(differences, default=0.0):.3g} "
          f"(max |gradient| {float(np.abs(first).max()):.3g})")


if __name__ == "__main__":
    main()
