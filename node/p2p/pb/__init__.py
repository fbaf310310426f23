"""Generated protobuf modules for the libp2p wire formats (crypto keys, Noise handshake
payload, identify, pubsub RPC).

Regenerate from the repository root after editing a .proto file (grpcio-tools is a dev-time
tool only; its protoc must match the ``protobuf`` runtime lower bound in pyproject.toml):

    pip install 'grpcio-tools==1.75.1'
    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. node/p2p/pb/*.proto
"""
