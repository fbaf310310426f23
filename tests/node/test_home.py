"""``fedchain init`` and ``fedchain testnet init`` produce complete, consistent homes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fl.data import DATA_DIR_ENV, load_local_data, load_mnist
from fl.partition import partition
from node.cli.main import main
from node.config import load_config
from node.core.crypto import PrivateKey
from node.home import Home, peer_id_of
from node.ledger.genesis import load_genesis
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from node.store.ledger import Ledger


@pytest.fixture(autouse=True)
def _public_mnist(monkeypatch: pytest.MonkeyPatch, mnist_dir: Path) -> None:
    """`testnet init` splits the public MNIST copy; here it is the suite's, never a download."""
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_peer_id_matches_the_transport_identity() -> None:
    key = PrivateKey.from_secret("node")
    assert peer_id_of(key) == IdentityKey.from_seed(key.seed).peer_id.to_base58()


def test_init_dev_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    assert main(["init", "--home", str(home), "--moniker", "alice", "--chain-id", "dev-1"]) == 0
    h = Home(home)
    for p in (h.validator_key_path, h.node_key_path):
        assert _mode(p) == 0o600
    assert (home / "data").is_dir()
    g = load_genesis(h.genesis_path)
    vkey = h.validator_key()
    assert g.chain_id == "dev-1"
    assert g.consensus_engine == "solo"
    assert [v.public_key for v in g.validators] == [vkey.public_key]
    assert list(g.trainers) == [vkey.address]
    assert g.accounts[0].address == vkey.address
    cfg = load_config(h.config_path)
    assert cfg.moniker == "alice"
    ledger = Ledger.open(cfg.data_path(home) / "chain.db", g, fsync=False)  # the chain starts
    try:
        assert ledger.height == 0 and ledger.account(vkey.address).balance > 0
    finally:
        ledger.close()
    out = capsys.readouterr().out
    assert vkey.address.hex() in out and h.peer_id() in out


def test_init_refuses_an_existing_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    assert main(["init", "--home", str(home)]) == 0
    before = (home / "validator_key.json").read_bytes()
    assert main(["init", "--home", str(home)]) == 1
    assert "already initialised" in capsys.readouterr().err
    assert (home / "validator_key.json").read_bytes() == before


def test_init_with_shared_genesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testnet", "init", "--nodes", "2", "--dir", str(tmp_path / "tn")]) == 0
    shared = tmp_path / "tn" / "genesis.json"
    assert main(["init", "--home", str(tmp_path / "j"), "--genesis", str(shared)]) == 0
    assert load_genesis(tmp_path / "j" / "genesis.json").hash == load_genesis(shared).hash
    # A mismatching chain id and an invalid genesis are refused, leaving no home behind.
    bad = ["init", "--home", str(tmp_path / "k"), "--genesis", str(shared), "--chain-id", "x"]
    assert main(bad) == 1
    assert "differs from the genesis chain id" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    doc = json.loads(shared.read_text())
    doc["validators"] = []
    broken.write_text(json.dumps(doc))
    assert main(["init", "--home", str(tmp_path / "k"), "--genesis", str(broken)]) == 1
    assert "validators" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_testnet_init(tmp_path: Path) -> None:
    d = tmp_path / "tn"
    argv = ["testnet", "init", "--nodes", "4", "--dir", str(d), "--base-port", "30000"]
    assert main([*argv, "--partition", "dirichlet:0.5", "--chain-id", "tn-1"]) == 0
    homes = [Home(d / f"node{i}") for i in range(4)]
    genesis = [h.genesis() for h in homes]
    assert len({g.hash for g in genesis}) == 1
    g = genesis[0]
    assert g.chain_id == "tn-1" and g.consensus_engine == "tendermint"
    assert g.fl.partition == "dirichlet:0.5" and g.fl.model == "cnn"
    assert g.fl.min_updates == 3  # two thirds of 4 trainers, rounded up
    vkeys = [h.validator_key() for h in homes]
    assert [v.public_key for v in g.validators] == [k.public_key for k in vkeys]
    assert len({v.stake for v in g.validators}) == 1
    assert list(g.trainers) == [k.address for k in vkeys]
    peer_ids = [h.peer_id() for h in homes]
    assert len(set(peer_ids)) == 4
    for i, h in enumerate(homes):
        assert _mode(h.validator_key_path) == 0o600 and _mode(h.node_key_path) == 0o600
        cfg = h.config()
        assert cfg.moniker == f"node{i}"
        assert Multiaddr.parse(cfg.p2p.listen).tcp_endpoint() == ("127.0.0.1", 30000 + 2 * i)
        assert cfg.rpc.listen == f"127.0.0.1:{30001 + 2 * i}"
        peers = {str(Multiaddr.parse(p).peer_id): p for p in cfg.p2p.persistent_peers}
        assert set(peers) == set(peer_ids) - {peer_ids[i]}
        for j, pid in enumerate(peer_ids):
            if j != i:
                assert Multiaddr.parse(peers[pid]).tcp_endpoint() == ("127.0.0.1", 30000 + 2 * j)


def test_testnet_init_gives_each_node_only_its_own_shard(tmp_path: Path, mnist_dir: Path) -> None:
    """Every home's fl.data_dir holds exactly the rows the genesis partition gives that
    trainer, in order (what nodes derived from the full set before), and nothing else."""
    d = tmp_path / "tn"
    argv = ["testnet", "init", "--nodes", "3", "--dir", str(d), "--partition", "shards:2"]
    assert main(argv) == 0
    full = load_mnist(mnist_dir, test_limit=0)
    homes = [Home(d / f"node{i}") for i in range(3)]
    g = homes[0].genesis()
    parts = partition(g.fl.partition, full.train_labels.numpy(), len(g.trainers), g.fl.init_seed)
    for h in homes:
        index = list(g.trainers).index(h.validator_key().address)
        shard = h.config().fl_data_path(h.path)
        assert shard == h.path / "train_data"
        local = load_local_data(shard)
        assert local.labels.equal(full.train_labels[parts[index]])
        assert local.images.equal(full.train_images[parts[index]])
        assert sorted(p.name for p in shard.iterdir()) == [
            "manifest.json",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        ]


def test_testnet_init_for_docker_hostnames(tmp_path: Path) -> None:
    d = tmp_path / "tn"
    names = "alpha,beta,gamma"
    argv = ["testnet", "init", "--nodes", "3", "--dir", str(d), "--hostnames", names]
    assert main([*argv, "--engine", "solo"]) == 0
    homes = [Home(d / f"node{i}") for i in range(3)]
    ids = [h.peer_id() for h in homes]
    cfg = homes[1].config()
    assert cfg.p2p.listen == "/ip4/0.0.0.0/tcp/26656"
    assert cfg.p2p.external == "/dns4/beta/tcp/26656"
    assert cfg.rpc.listen == "0.0.0.0:26657"
    assert sorted(cfg.p2p.persistent_peers) == sorted(
        [f"/dns4/alpha/tcp/26656/p2p/{ids[0]}", f"/dns4/gamma/tcp/26656/p2p/{ids[2]}"]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engine", "pow"], "unknown consensus engine 'pow'"),
        (["--partition", "weird"], "unknown partition"),
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--hostnames", "a,b"], "lists 2 names for 3 nodes"),
        (["--base-port", "65531"], "leaves no room"),
        (["--host", "not-an-ip"], "not an IPv4 address"),
        (["--hostnames", "a,a,b"], "distinct"),
        (["--hostnames", "a,b/c,d"], "not a usable hostname"),
    ],
)
def test_testnet_init_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    d = tmp_path / "tn"
    assert main(["testnet", "init", "--nodes", "3", "--dir", str(d), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not d.exists()  # nothing half-made is left behind


def test_testnet_init_refuses_a_used_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "tn"
    assert main(["testnet", "init", "--nodes", "1", "--dir", str(d)]) == 0
    assert main(["testnet", "init", "--nodes", "1", "--dir", str(d)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["testnet", "init", "--nodes", "0", "--dir", "x"])
    assert e.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_init_with_the_genesis_already_in_the_home(tmp_path: Path) -> None:
    assert main(["testnet", "init", "--nodes", "1", "--dir", str(tmp_path / "tn")]) == 0
    home = tmp_path / "j"
    home.mkdir()
    (home / "genesis.json").write_bytes((tmp_path / "tn" / "genesis.json").read_bytes())
    assert main(["init", "--home", str(home), "--genesis", str(home / "genesis.json")]) == 0
    assert Home(home).genesis().chain_id == "fedchain-testnet"


def test_testnet_nodes_share_evaluation_work(tmp_path: Path) -> None:
    """On one machine only node0 evaluates the global model (all nodes hold the same one),
    so ten nodes do not repeat one evaluation ten times; peers evaluate when asked to, and
    nodes on their own hosts evaluate like node0."""
    from node.home import HomeError, testnet_init

    homes = testnet_init(tmp_path / "net", 3, base_port=27500, eval_samples=5000)
    assert [h.config().fl.eval_samples for h in homes] == [5000, 0, 0]
    # `testnet up` judges the target accuracy by node0's evaluation only.
    from node.testnet.runner import Testnet

    assert [n.index for n in Testnet.from_homes(tmp_path / "net").evaluators] == [0]
    homes = testnet_init(
        tmp_path / "asked", 3, base_port=27500, eval_samples=5000, peer_eval_samples=800
    )
    assert [h.config().fl.eval_samples for h in homes] == [5000, 800, 800]
    homes = testnet_init(tmp_path / "small", 2, base_port=27500, eval_samples=200,
                         peer_eval_samples=1000)  # fmt: skip
    assert [h.config().fl.eval_samples for h in homes] == [200, 200]
    homes = testnet_init(
        tmp_path / "hosts", 2, base_port=26656, eval_samples=300, hostnames=["a", "b"]
    )
    assert [h.config().fl.eval_samples for h in homes] == [300, 300]
    with pytest.raises(HomeError, match="peer-eval-samples"):
        testnet_init(tmp_path / "bad", 2, base_port=27500, peer_eval_samples=-1)
