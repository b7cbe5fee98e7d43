"""Writes Fashion-MNIST as a folder of PNG files, the layout users' own
images come in: `OUT/train/<class>/<index>.png` and `OUT/test/<class>/...`.

`make demo-folder` trains from this folder through the streaming path
(`keras_contrast.data.FolderSource`). PNG is lossless, so the streamed
pixels equal the IDX files' bytes. Class folders are named
`<label>_<name>` so that their sorted order is the label order.

    python tools/write_image_folder.py runs/fashion_mnist_png
"""

import argparse
import os
import re
import shutil
import sys

import numpy as np
import tensorflow as tf

from keras_contrast import data


def class_folder(label, name):
    return f"{label}_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_').lower()}"


def write_split(images, labels, directory):
    """Writes `images[i]` to `directory/<class>/<i>.png`; returns the count."""
    folders = [os.path.join(directory, class_folder(label, name))
               for label, name in enumerate(data.FASHION_MNIST_CLASSES)]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    # tf.data encodes in parallel; the files are written here, in order.
    encoded = tf.data.Dataset.from_tensor_slices(images[..., None]).map(
        tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for index, (png, label) in enumerate(zip(encoded.as_numpy_iterator(), labels)):
        with open(os.path.join(folders[int(label)], f"{index:05d}.png"), "wb") as handle:
            handle.write(png)
    return len(images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write (must not hold a train/ folder yet)")
    parser.add_argument("--fashion-mnist", default=None,
                        help="the folder of the four IDX files (default: where "
                        "load_fashion_mnist looks)")
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.out, "train")):
        print(f"{args.out}/train exists; not overwriting it", file=sys.stderr)
        return 2
    (x, y), (xt, yt) = data.load_fashion_mnist(args.fashion_mnist)
    # Written aside and renamed at the end: an interrupted run leaves no
    # half folder that a later `make demo-folder` would train on.
    partial = args.out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts = [write_split(np.asarray(images), labels, os.path.join(partial, split))
              for split, images, labels in (("train", x, y), ("test", xt, yt))]
    os.makedirs(args.out, exist_ok=True)
    for split in ("test", "train"):  # train/ last: its presence marks a whole folder
        os.rename(os.path.join(partial, split), os.path.join(args.out, split))
    os.rmdir(partial)
    print(f"wrote {counts[0]} training and {counts[1]} test PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
