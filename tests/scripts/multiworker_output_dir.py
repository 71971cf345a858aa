"""One worker of a local two-worker `MultiWorkerMirroredStrategy` cluster.

Run as its own process, with `TF_CONFIG` set by the caller: builds the
strategy (which connects to the other worker) and prints one JSON line with
`recipes.worker_output_dir` and the number of replicas.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_selfattn import recipes  # noqa: E402


def main(output_dir):
    strategy = recipes.make_strategy("multiworker")
    print(
        json.dumps(
            {
                "dir": recipes.worker_output_dir(output_dir, strategy),
                "replicas": strategy.num_replicas_in_sync,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
