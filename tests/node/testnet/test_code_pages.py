"""A node drops the code pages only its start-up ran, and keeps working afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from node.testnet.code_pages import code_mappings

SMAPS = textwrap.dedent(
    """\
    55d0c0000000-55d0c0001000 r--p 00000000 08:01 123  /usr/bin/python3.11
    Size:                  4 kB
    Rss:                   4 kB
    Anonymous:             0 kB
    7f0000000000-7f0000400000 r-xp 00010000 08:01 456  /opt/lib/libtorch_cpu.so
    Size:               4096 kB
    Rss:                2048 kB
    Anonymous:             0 kB
    VmFlags: rd ex mr mw me
    7f0000400000-7f0000500000 r-xp 00410000 08:01 457  /opt/lib/libtextrel.so
    Rss:                 512 kB
    Anonymous:           128 kB
    7f0000500000-7f0000600000 rw-p 00000000 08:01 458  /opt/lib/libdata.so
    Rss:                 512 kB
    Anonymous:           512 kB
    7f0000600000-7f0000700000 r-xp 00000000 00:00 0
    Rss:                 100 kB
    7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0  [vdso]
    Rss:                   4 kB
    """
)


def test_only_executable_file_mappings_are_listed() -> None:
    maps = code_mappings(SMAPS)
    assert [(m.path, m.rss_kb, m.anonymous_kb) for m in maps] == [
        ("/opt/lib/libtorch_cpu.so", 2048, 0),
        ("/opt/lib/libtextrel.so", 512, 128),
    ]
    assert maps[0].start == 0x7F0000000000 and maps[0].end == 0x7F0000400000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and madvise")
def test_release_shrinks_rss_and_torch_still_computes() -> None:
    script = textwrap.dedent(
        """\
        import json, torch
        from node.testnet.code_pages import release_startup_code_pages

        def rss_file_kb():
            for line in open("/proc/self/status"):
                if line.startswith("RssFile:"):
                    return int(line.split()[1])

        before = rss_file_kb()
        released = release_startup_code_pages()
        after = rss_file_kb()
        torch.manual_seed(0)
        a, b = torch.randn(64, 64), torch.randn(64, 64)
        net = torch.nn.Conv2d(1, 4, 3)
        out = net(torch.ones(1, 1, 8, 8)).sum()
        out.backward()
        print(json.dumps({
            "before": before, "after": after, "released": released,
            "matmul_ok": bool(torch.allclose(a @ b, (a.double() @ b.double()).float(), atol=1e-4)),
            "grad_ok": bool(net.weight.grad is not None and torch.isfinite(net.weight.grad).all()),
        }))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    # libtorch's start-up alone maps tens of MB of code that is released here.
    assert doc["released"] > 20_000
    assert doc["after"] < doc["before"] - 20_000
    assert doc["matmul_ok"] and doc["grad_ok"]
