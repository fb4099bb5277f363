// The libvirt launcher: the same boot as the direct one, with QEMU started by
// libvirt as a transient domain (never defined) whose vhost-user disk is
// blkrig-device. The default connection is libvirt's embedded QEMU driver on
// a root folder of the boot's own, so no daemon is needed.
#pragma once

#include "launch/boot.hpp"

#include <filesystem>
#include <string>

namespace blkrig::launch {

// qemu:///embed?root=ROOT
std::string embed_uri(const std::filesystem::path& root);
// The root folder of a qemu:///embed URI; empty for any other URI.
std::filesystem::path embed_root(const std::string& uri);
// ROOT/etc/qemu.conf for an embedded driver: QEMU as root without a security
// driver (it reaches the device's socket and the run folder), and QEMU's
// output to a plain log file (no virtlogd).
std::string embed_qemu_conf();

// The domain XML for spec: TCG on q35, spec.memory_mb of shared memfd RAM,
// one vCPU per queue (unless spec.cpus), direct kernel boot, the disk as a
// vhost-user disk on socket, the console into out_dir/console.log and each
// of spec.serial_ports as a named virtio-serial channel into its file. An
// empty emulator leaves the choice of QEMU binary to libvirt. Pure: reads no
// files, so paths should be absolute.
std::string domain_xml(const BootSpec& spec, const std::string& name, const std::filesystem::path& socket,
                       const std::string& emulator);

// The boot through libvirt at spec.libvirt_uri (see BootSpec); launch::boot
// dispatches here for Launcher::libvirt.
BootResult boot_libvirt(const BootSpec& spec);

}  // namespace blkrig::launch
