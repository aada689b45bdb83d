"""The IPoIB P_Key child request, byte for byte against the uapi, and the kernel's acknowledgements."""

import errno
import struct
import sys

import pytest

from sriovdra.host import ipoib

little_endian = pytest.mark.skipif(sys.byteorder != "little", reason="the literal bytes are little-endian")


@little_endian
def test_child_request_matches_the_uapi_layout_byte_for_byte():
    # What `ip link add link <ifindex 5> name ib0.8001 type ipoib pkey 0x8001` sends, written out by hand
    # from include/uapi/linux/{netlink,rtnetlink,if_link}.h:
    expected = bytes.fromhex(
        "54000000" "1000" "0506" "07000000" "00000000"  # nlmsghdr: len 84, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE, seq 7
        "00" "00" "0000" "00000000" "00000000" "00000000"  # ifinfomsg: AF_UNSPEC, no index/flags/change
        "0d00" "0300" "6962302e3830303100" "000000"  # IFLA_IFNAME (3) "ib0.8001\0", padded to 4
        "0800" "0500" "05000000"  # IFLA_LINK (5): parent ifindex 5, u32
        "1c00" "1280"  # IFLA_LINKINFO (18) | NLA_F_NESTED, 28 bytes
        "0a00" "0100" "69706f696200" "0000"  # IFLA_INFO_KIND (1) "ipoib\0", padded
        "0c00" "0280"  # IFLA_INFO_DATA (2) | NLA_F_NESTED
        "0600" "0100" "0180" "0000"  # IFLA_IPOIB_PKEY (1): u16 0x8001, padded
    )
    assert ipoib.child_request(7, "ib0.8001", 5, 0x8001) == expected


def test_constants_are_the_uapi_values():
    assert (ipoib.IFLA_IPOIB_PKEY, ipoib.IFLA_IPOIB_MODE, ipoib.IFLA_IPOIB_UMCAST) == (1, 2, 3)
    assert (ipoib.IFLA_IFNAME, ipoib.IFLA_LINK, ipoib.IFLA_LINKINFO, ipoib.RTM_NEWLINK) == (3, 5, 18, 16)
    assert (ipoib.IFLA_INFO_KIND, ipoib.IFLA_INFO_DATA, ipoib.NLA_F_NESTED) == (1, 2, 0x8000)


def test_every_attribute_is_4_byte_aligned_and_lengths_add_up():
    msg = ipoib.child_request(1, "x", 1, 0x0001)  # 1-character name: the most padding
    assert len(msg) % 4 == 0 and struct.unpack_from("=I", msg)[0] == len(msg)


@pytest.mark.parametrize("pkey, name", [(0, "ib0.1"), (0x8000, "ib0.1"), (0x10000, "ib0.1"), (0x8001, ""),
                                        (0x8001, "sixteen-chars-xx")])
def test_invalid_requests_are_refused_before_sending(pkey, name):
    with pytest.raises(ValueError):
        ipoib.child_request(1, name, 1, pkey)


def test_netdev_mtu_is_the_ib_mtu_minus_the_ipoib_header():
    assert [ipoib.netdev_mtu(m) for m in (256, 2048, 4096)] == [252, 2044, 4092]


def test_hints_name_the_module():
    assert "is ib_ipoib loaded?" in ipoib.hint(errno.EOPNOTSUPP)
    assert "ib_ipoib" in ipoib.hint(errno.ENODEV) and "ib_ipoib" in ipoib.hint(errno.EPERM)


def test_child_pkey_rule_is_the_configs_and_the_hints_say_what_the_kernel_does():
    from sriovdra.config import ConfigError, decode_ib_config

    for bad in (0x0000, 0x8000, 0x10000):  # one rule for the config and the message
        with pytest.raises(ValueError) as child:
            ipoib.child_request(1, "ib0.x", 3, bad)
        with pytest.raises(ConfigError) as config:
            decode_ib_config({"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "IbConfig", "pkey": bad})
        assert str(child.value) in str(config.value)
    assert "0x8000" in ipoib.hint(errno.EINVAL)
    assert "one child per P_Key" in ipoib.hint(errno.ENOTUNIQ)  # not "already has a child": rtnetlink may share
