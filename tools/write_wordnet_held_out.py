"""Writes `tests/data/wordnet_held_out.json`: the held-out WordNet pairs the
shipped dual-encoder presets are scored on, so their card's recall is
checked without WordNet installed.

    python tools/write_wordnet_held_out.py [--seed 0]

The pairs are `keras-contrast train --model dual`'s held-out split (all
training pairs, `--seed`), with WordNet's copyright notice and licence,
which its licence asks every copy to carry.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from keras_contrast.cli._datasets import wordnet_split  # noqa: E402

PATH = os.path.join(ROOT, "tests", "data", "wordnet_held_out.json")
NOTICE = (
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. "
    "Permission to use, copy, modify and distribute this software and database and its "
    "documentation for any purpose and without fee or royalty is hereby granted, provided "
    "that you agree to comply with the following copyright notice and statements, including "
    "the disclaimer, and that the same appear on ALL copies of the software, database and "
    "documentation, including modifications that you make for internal use or for "
    "distribution. THIS SOFTWARE AND DATABASE IS PROVIDED \"AS IS\" AND PRINCETON UNIVERSITY "
    "MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT "
    "LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF "
    "MERCHANTABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED "
    "SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, "
    "COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. The name of Princeton University or Princeton "
    "may not be used in advertising or publicity pertaining to distribution of the software "
    "and/or database. Title to copyright in this software, database and any associated "
    "documentation shall at all times remain with Princeton University and LICENSEE agrees "
    "to preserve same.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _, held_out = wordnet_split(None, args.seed)
    record = {"source": "WordNet 3.0 (Debian wordnet-base), the held-out split of "
                        "`keras-contrast train --model dual` with all training pairs",
              "seed": args.seed, "train_size": None, "licence": NOTICE,
              "pairs": [{"gloss": p["gloss"], "key": p["key"]} for p in held_out]}
    with open(PATH, "w") as handle:
        json.dump(record, handle, indent=0, ensure_ascii=False)
        handle.write("\n")
    print(f"{PATH}: {len(held_out)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
