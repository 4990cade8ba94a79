"""bootsvc.modalias on a hand-written excerpt of a 6.1 kernel's index (fixtures/kernel-6.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootsvc.errors import ModuleIndexError
from bootsvc.modalias import ModuleIndex, PciModalias, read_pci_modaliases

KERNEL = Path(__file__).parent / "fixtures" / "kernel-6.1"
# QEMU's virtio-net-pci (modern, disable-legacy=on) and its transitional variant.
VIRTIO_NET_MODERN = "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"
VIRTIO_NET_LEGACY = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
VIRTIO_BLK = "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"
PIIX_IDE = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"
E1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
VIRTIO_NET_CHAIN = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
]


@pytest.fixture
def index() -> ModuleIndex:
    return ModuleIndex.from_dir(KERNEL)


def test_virtio_net_chain_matches_the_measured_insmod_order(index: ModuleIndex) -> None:
    assert index.nic_modules([VIRTIO_NET_MODERN]) == VIRTIO_NET_CHAIN


def test_transitional_virtio_nic_takes_its_type_from_the_subsystem_id(index: ModuleIndex) -> None:
    assert PciModalias.parse(VIRTIO_NET_LEGACY).virtio_modalias() == "virtio:d00000001v00001AF4"
    assert index.nic_modules([VIRTIO_NET_LEGACY]) == VIRTIO_NET_CHAIN


def test_modern_virtio_type_is_device_id_minus_0x1040() -> None:
    assert PciModalias.parse(VIRTIO_BLK).virtio_modalias() == "virtio:d00000002v00001AF4"
    assert PciModalias.parse(E1000).virtio_modalias() is None


def test_non_network_devices_are_ignored_and_nics_share_dependencies(index: ModuleIndex) -> None:
    both = index.nic_modules([VIRTIO_BLK, PIIX_IDE, VIRTIO_NET_MODERN, E1000, VIRTIO_NET_LEGACY])
    assert both == [*VIRTIO_NET_CHAIN, "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"]
    assert len(both) == len(set(both))


def test_result_does_not_depend_on_input_order(index: ModuleIndex) -> None:
    one = index.nic_modules([E1000, VIRTIO_NET_MODERN])
    assert one == index.nic_modules([VIRTIO_NET_MODERN, E1000])


def test_match_uses_globs_case_sensitively(index: ModuleIndex) -> None:
    assert index.match(PIIX_IDE) == ["ata_generic", "ata_piix"]
    assert index.match(VIRTIO_NET_MODERN.lower()) == []
    assert index.match("virtio:d00000001v00001AF4") == ["virtio_net"]


def test_dependencies_come_first_without_duplicates(index: ModuleIndex) -> None:
    order = index.load_order(["e1000e", "ptp"])
    assert order == [
        "kernel/drivers/pps/pps_core.ko",
        "kernel/drivers/ptp/ptp.ko",
        "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
    ]


def test_dashes_and_underscores_name_the_same_module(index: ModuleIndex) -> None:
    assert index.load_order(["net-failover"])[-1] == "kernel/drivers/net/net_failover.ko"


def test_unknown_module_is_refused_with_its_name(index: ModuleIndex) -> None:
    with pytest.raises(ModuleIndexError) as caught:
        index.load_order(["ata_piix"])
    assert caught.value.value == "ata_piix"


def test_dependency_loop_is_refused() -> None:
    looped = ModuleIndex.parse("", "a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(ModuleIndexError, match="loop"):
        looped.load_order(["a"])


def test_compressed_module_files_keep_their_names() -> None:
    index = ModuleIndex.parse("alias virtio:d00000001v* virtio_net\n", "k/virtio_net.ko.xz:\n")
    assert index.load_order(index.match("virtio:d00000001v00001AF4")) == ["k/virtio_net.ko.xz"]


@pytest.mark.parametrize("alias", ["alias onlytwo\n", "options foo bar\n"])
def test_malformed_alias_line_is_refused(alias: str) -> None:
    with pytest.raises(ModuleIndexError) as caught:
        ModuleIndex.parse(alias, "")
    assert caught.value.what == "modules.alias"


def test_non_pci_modalias_is_refused(index: ModuleIndex) -> None:
    with pytest.raises(ModuleIndexError) as caught:
        index.nic_modules(["usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00"])
    assert caught.value.what == "modalias"


def test_missing_index_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModuleIndexError) as caught:
        ModuleIndex.from_dir(tmp_path)
    assert caught.value.value == str(tmp_path / "modules.alias")


def test_sysfs_modaliases_are_read_sorted(tmp_path: Path) -> None:
    for slot, alias in (("0000:00:03.0", VIRTIO_NET_MODERN), ("0000:00:01.1", PIIX_IDE)):
        device = tmp_path / "bus" / "pci" / "devices" / slot
        device.mkdir(parents=True)
        (device / "modalias").write_text(alias + "\n")
    assert read_pci_modaliases(tmp_path) == [PIIX_IDE, VIRTIO_NET_MODERN]
