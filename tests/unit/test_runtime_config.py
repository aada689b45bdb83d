"""Reading containerd and CRI-O configuration for CDI and NRI."""

from sriovdra.host.paths import HostPaths
from sriovdra.host.runtime_config import read_containerd, read_crio, read_runtimes


def _write(tmp_path, rel, text):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return HostPaths.resolve(str(tmp_path))


def test_containerd_v3_defaults_to_cdi_and_nri_on(tmp_path):
    cfg = read_containerd(_write(tmp_path, "etc/containerd/config.toml", "version = 3\n"))
    assert (cfg.cdi_enabled, cfg.nri_enabled, cfg.error) == (True, True, None)
    assert cfg.cdi_spec_dirs == ["/etc/cdi", "/var/run/cdi"]


def test_containerd_v2_unset_is_unknown_and_explicit_values_win(tmp_path):
    paths = _write(tmp_path, "etc/containerd/config.toml", "version = 2\n")
    assert (read_containerd(paths).cdi_enabled, read_containerd(paths).nri_enabled) == (None, None)
    paths = _write(tmp_path, "etc/containerd/config.toml", """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["/etc/cdi"]
[plugins."io.containerd.nri.v1.nri"]
  disable = true
  socket_path = "/run/nri.sock"
""")
    cfg = read_containerd(paths)
    assert (cfg.cdi_enabled, cfg.nri_enabled, cfg.cdi_spec_dirs, cfg.nri_socket) == \
        (True, False, ["/etc/cdi"], "/run/nri.sock")


def test_containerd_parse_errors_and_old_versions_are_reported(tmp_path):
    cfg = read_containerd(_write(tmp_path, "etc/containerd/config.toml", "version = [\n"))
    assert cfg.error
    cfg = read_containerd(_write(tmp_path, "etc/containerd/config.toml", "root = '/x'\n"))
    assert "too old" in cfg.error


def test_crio_drop_ins_override_the_main_file(tmp_path):
    _write(tmp_path, "etc/crio/crio.conf", "[crio.nri]\nenable_nri = false\n")
    paths = _write(tmp_path, "etc/crio/crio.conf.d/20-nri.conf", "[crio.nri]\nenable_nri = true\n")
    cfg = read_crio(paths)
    assert (cfg.runtime, cfg.cdi_enabled, cfg.nri_enabled) == ("cri-o", True, True)
    assert cfg.config_path == "/etc/crio/crio.conf.d/20-nri.conf"


def test_no_runtime_configuration(tmp_path):
    assert read_runtimes(HostPaths.resolve(str(tmp_path))) == []
