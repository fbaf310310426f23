"""``fedchain data split``: shard directories for a test network, one per participant.

Also home to ``fetch_mnist_once``, which ``testnet init`` and ``testnet up`` call before
they write any home: the public MNIST copy is found (``--data-dir``, ``$FEDCHAIN_DATA_DIR``)
or downloaded into the cache once, with a progress bar, and every node then gets only its
own shard of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli.common import CLIError, positive_int

__all__ = ["fetch_mnist_once", "register_data"]


def fetch_mnist_once(data_dir: str | None) -> Path:
    """The directory of a full, present MNIST copy; the cache is filled first if needed,
    showing one progress bar per file downloaded (on stderr, gone when done)."""
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TaskID, TransferSpeedColumn

    from fl.data import DataError, fetch_mnist

    tasks: dict[str, TaskID] = {}
    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"MNIST {name}", total=total)
            bar.update(tasks[name], completed=done, total=total)

        try:
            return fetch_mnist(data_dir, progress=progress)
        except DataError as e:
            raise CLIError(str(e)) from e


def _cmd_split(args: argparse.Namespace) -> int:
    from fl.data import DataError
    from fl.partition import PartitionError
    from fl.shards import write_shards

    if args.seed < 0:
        raise CLIError(f"--seed {args.seed}: must not be negative")
    source = fetch_mnist_once(args.data_dir)
    out = Path(args.out)
    dests = [out / f"node{i}" for i in range(args.nodes)]
    try:
        manifests = write_shards(source, dests, args.partition, args.seed)
    except (DataError, PartitionError, OSError) as e:
        raise CLIError(str(e)) from e
    print(f"wrote {len(dests)} shards of {source} to {out} (partition {args.partition}, "
          f"seed {args.seed})")  # fmt: skip
    for d, m in zip(dests, manifests, strict=True):
        print(f"  {d}: {m.samples} examples, per class {m.class_counts}")
    return 0


def register_data(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data: Any = sub.add_parser("data", help="prepare training data (shards for test networks)")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    p = dsub.add_parser(
        "split",
        help="split MNIST's training set into one directory per participant",
        description="Write OUT/node0 .. OUT/node{N-1}: participant i's examples of the "
        "partition (the recipe a testnet genesis names), as MNIST IDX files, with a copy of "
        "the public test set and manifest.json (counts per class, SHA-256). Point a node's "
        "fl.data_dir at its directory. With the genesis's partition and init_seed (0 for "
        "fedchain's testnets) each shard holds exactly that trainer's rows.",
    )
    p.add_argument("--nodes", type=positive_int, required=True, help="number of participants")
    p.add_argument("--partition", default="iid", help="iid | dirichlet:ALPHA | shards:K")
    p.add_argument("--seed", type=int, default=0, help="partition seed (genesis init_seed)")
    p.add_argument("--out", required=True, help="directory for the shard directories")
    p.add_argument(
        "--data-dir", help="full MNIST copy (default: $FEDCHAIN_DATA_DIR, else the cache)"
    )
    p.set_defaults(func=_cmd_split)
