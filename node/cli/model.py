"""``fedchain model download|eval``: fetch the current global model and test it.

A download is verified before it is written: the safetensors bytes must hash to what
``/model/info`` announced, and the parameters parsed from them (safetensors runs no code)
must hash to the announced on-chain model hash, so a corrupted or substituted file is
never left behind looking valid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from node.cli.common import CLIError, add_node_args, node_url
from node.core.atomic_file import write_atomic
from node.rpc.client import RPCClient, RPCClientError

__all__ = ["register"]


def _cmd_download(args: argparse.Namespace) -> int:
    from fl.models import ModelFormatError, import_safetensors, model_hash

    client = RPCClient(node_url(args), timeout=args.timeout)
    try:
        info = client.get_json("/model/info")
        if not isinstance(info, dict) or not info.get("available"):
            raise CLIError(f"the node at {client.url} holds no global model yet")
        data = client.get_bytes("/model")
    except RPCClientError as e:
        raise CLIError(str(e)) from e
    if hashlib.sha256(data).hexdigest() != info.get("safetensors_sha256"):
        raise CLIError("the downloaded file does not match the sha256 in /model/info")
    try:
        params = import_safetensors(data, str(info["architecture"]))
    except ModelFormatError as e:
        raise CLIError(f"the downloaded model is invalid: {e}") from e
    digest = model_hash(params).hex()
    if digest != info.get("model_hash"):
        raise CLIError(f"model hash {digest} differs from the announced {info.get('model_hash')}")
    out = Path(args.out)
    try:
        write_atomic(out, data)
    except OSError as e:
        raise CLIError(f"cannot write {out}: {e}") from e
    print(f"wrote {out} ({len(data)} bytes): round {info.get('round')}, model hash {digest}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from fl.data import DataError, load_mnist
    from fl.models import ModelFormatError, import_safetensors, model_hash
    from fl.train import evaluate

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e}") from e
    try:
        params = import_safetensors(data, args.model)
    except ModelFormatError as e:
        raise CLIError(f"{path}: {e}") from e
    try:
        mnist = load_mnist(args.data_dir, download=False)
    except DataError as e:
        raise CLIError(str(e)) from e
    acc = evaluate(args.model, params, mnist.test_images, mnist.test_labels, threads=args.threads)
    result = {
        "file": str(path),
        "model_hash": model_hash(params).hex(),
        "test_samples": len(mnist.test_labels),
        "accuracy": acc,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{path}: test accuracy {acc:.4f} on {result['test_samples']} MNIST test images")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("model", help="download or evaluate the global model")
    msub = m.add_subparsers(dest="model_cmd", required=True)
    d = msub.add_parser(
        "download",
        help="save the node's current global model as safetensors (hash-verified)",
    )
    d.add_argument("--out", required=True, help="output file, e.g. model.safetensors")
    add_node_args(d)
    d.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node")
    d.set_defaults(func=_cmd_download)
    e = msub.add_parser("eval", help="MNIST test accuracy of a safetensors model file")
    e.add_argument("file", help="a .safetensors file (e.g. from `fedchain model download`)")
    e.add_argument("--data-dir", required=True, help="directory with the MNIST IDX files")
    e.add_argument("--model", default="cnn", help="architecture of the file (default cnn)")
    e.add_argument("--threads", type=int, default=None, help="torch threads")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(func=_cmd_eval)
