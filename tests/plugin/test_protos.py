"""The gRPC stubs: regenerating them reproduces the committed files, and the wire names are the kubelet's."""

import filecmp
import importlib.util
import os

from tests.conftest import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "hack" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regeneration_reproduces_the_committed_stubs(tmp_path):
    written = _generator().generate(str(tmp_path))
    assert len(written) == 15
    for rel in written:
        assert filecmp.cmp(tmp_path / rel, REPO / rel, shallow=False), f"{rel} is stale: run hack/gen_protos.py"


def test_wire_names_and_field_numbers():
    from sriovdra.plugin.proto import dra_v1_pb2, dra_v1beta1_pb2, health_v1alpha1_pb2, pluginregistration_pb2

    assert dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    assert dra_v1beta1_pb2.DESCRIPTOR.package == "k8s.io.kubelet.pkg.apis.dra.v1beta1"
    assert health_v1alpha1_pb2.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name == \
        "v1alpha1.DRAResourceHealth"
    assert pluginregistration_pb2.DESCRIPTOR.services_by_name["Registration"].full_name == \
        "pluginregistration.Registration"
    fields = {f.name: f.number for f in dra_v1_pb2.Device.DESCRIPTOR.fields}
    assert fields == {"request_names": 1, "pool_name": 2, "device_name": 3, "cdi_device_ids": 4, "share_id": 5}
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name
    assert {f.name: f.number for f in dra_v1_pb2.Claim.DESCRIPTOR.fields} == {"namespace": 1, "uid": 2, "name": 3}
    assert {f.name: f.number for f in health_v1alpha1_pb2.DeviceHealth.DESCRIPTOR.fields} == {
        "device": 1, "health": 2, "last_updated_time": 3, "health_check_timeout_seconds": 4, "message": 5}
    assert os.path.basename(dra_v1_pb2.__file__) == "dra_v1_pb2.py"
