"""`sriovdra cdi generate` for InfiniBand: the P_Key index and the RDMA libraries' env, as serve writes them."""

import json

from tests.cli.test_cli import run
from tests.conftest import ib_pf
from tests.support.claims import SEED_IB_CONFIG


def test_cdi_generate_resolves_the_pkey_against_the_port_table(build_host, tmp_path):
    host, _ = build_host({"pfs": [ib_pf(ports=[{"pkeys": [0xFFFF, 0, 0, 0x8001]}], vfs={"total": 2, "count": 1})]})
    cfg = tmp_path / "ib.json"
    cfg.write_text(json.dumps(SEED_IB_CONFIG))
    spec = json.loads(run("cdi", "generate", "--host-root", host.root, "--driver", "ib.sigs.k8s.io",
                          "--config", str(cfg), check=0).stdout)
    for i in range(2):  # the PF's port and the VF's
        env = spec["devices"][i]["containerEdits"]["env"]
        assert {f"IB_DEVICE_{i}_PKEY=0x8001", f"IB_DEVICE_{i}_PKEY_INDEX=3", f"IB_DEVICE_{i}_MTU=4096"} <= set(env)
    assert spec["containerEdits"]["env"] == ["NCCL_IB_PKEY=3", "UCX_IB_PKEY=0x0001", "NCCL_IB_TC=128",
                                             "UCX_IB_TRAFFIC_CLASS=128", "UCX_IB_PATH_MTU=4096"]
