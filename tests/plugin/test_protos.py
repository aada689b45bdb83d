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
    assert len(written) == 19  # plugin/proto: 5 x (pb2, pyi, grpc); nri/proto: 2 x (pb2, pyi), no gRPC
    assert "sriovdra/nri/proto/nri_pb2.py" in written and "sriovdra/nri/proto/ttrpc_pb2.pyi" in written
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


def test_nri_wire_names_and_field_numbers():
    """NRI v0.8.0 api.proto and containerd/ttrpc request.proto names and numbers (a subset: see nri.proto)."""
    from sriovdra.nri.proto import nri_pb2, ttrpc_pb2

    assert nri_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name == "nri.pkg.api.v1alpha1.Plugin"
    assert nri_pb2.DESCRIPTOR.services_by_name["Runtime"].methods_by_name["RegisterPlugin"]
    assert [m.name for m in nri_pb2.DESCRIPTOR.services_by_name["Plugin"].methods] == [
        "Configure", "Synchronize", "Shutdown", "CreateContainer", "UpdateContainer", "StopContainer", "StateChange"]
    assert {f.name: f.number for f in nri_pb2.PodSandbox.DESCRIPTOR.fields} == {
        "id": 1, "name": 2, "uid": 3, "namespace": 4, "labels": 5, "annotations": 6, "runtime_handler": 7,
        "linux": 8, "pid": 9, "ips": 10}
    assert {f.name: f.number for f in nri_pb2.ContainerAdjustment.DESCRIPTOR.fields} == {
        "annotations": 2, "env": 4, "linux": 6, "CDI_devices": 8}
    assert nri_pb2.ConfigureResponse.DESCRIPTOR.fields_by_name["events"].number == 2
    assert nri_pb2.Event.Value("CREATE_CONTAINER") == 4
    assert {f.name: f.number for f in ttrpc_pb2.Request.DESCRIPTOR.fields} == {
        "service": 1, "method": 2, "payload": 3, "timeout_nano": 4, "metadata": 5}
    assert {f.name: f.number for f in ttrpc_pb2.Status.DESCRIPTOR.fields} == {"code": 1, "message": 2}
