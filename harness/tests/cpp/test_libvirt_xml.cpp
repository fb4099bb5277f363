// The libvirt launcher's domain XML: the vhost-user disk on the device's
// socket, shared memfd RAM, direct kernel boot, the console and the agent's
// channels; and the embedded driver's URI and qemu.conf.
#include "launch/libvirt.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <unistd.h>

#include "common/temp_dir.hpp"

namespace blkrig::launch {
namespace {

BootSpec spec() {
    BootSpec s;
    s.kernel = "/k/vmlinuz";
    s.initrd = "/run/x/initrd.gz";
    s.disk = "/run/x/disk.img";
    s.out_dir = "/run/x";
    s.append = "blkrig.step=1 a=<b&c>";
    s.memory_mb = 768;
    s.num_queues = 4;
    s.queue_size = 256;
    s.serial_ports = {{"blkrig.results", "results.jsonl"}, {"blkrig.events", "events.txt"}};
    return s;
}

bool has(const std::string& xml, const std::string& what) { return xml.find(what) != std::string::npos; }

TEST(LibvirtXml, VhostUserDiskOnTheDeviceSocket) {
    const auto xml = domain_xml(spec(), "blkrig-1-ab", "/tmp/blkrig-Q/vu.sock", "");
    EXPECT_TRUE(has(xml, "<domain type='qemu'>")) << xml;  // TCG
    EXPECT_TRUE(has(xml, "<name>blkrig-1-ab</name>"));
    EXPECT_TRUE(has(xml, "<disk type='vhostuser' device='disk'>"));
    EXPECT_TRUE(has(xml, "<driver name='qemu' type='raw' queues='4' queue_size='256'/>"));
    EXPECT_TRUE(has(xml, "<source type='unix' path='/tmp/blkrig-Q/vu.sock'>"));
    EXPECT_TRUE(has(xml, "<reconnect enabled='no'/>"));
    EXPECT_TRUE(has(xml, "<target dev='vda' bus='virtio'/>"));
    EXPECT_FALSE(has(xml, "<emulator>")) << "no emulator given: libvirt's choice";
}

TEST(LibvirtXml, SharedMemfdRamAndOneCpuPerQueue) {
    const auto xml = domain_xml(spec(), "d", "/s", "");
    EXPECT_TRUE(has(xml, "<memory unit='MiB'>768</memory>"));
    EXPECT_TRUE(has(xml, "<source type='memfd'/>"));
    EXPECT_TRUE(has(xml, "<access mode='shared'/>"));
    EXPECT_TRUE(has(xml, "<vcpu>4</vcpu>"));
    auto s = spec();
    s.cpus = 2;
    EXPECT_TRUE(has(domain_xml(s, "d", "/s", ""), "<vcpu>2</vcpu>"));
}

TEST(LibvirtXml, DirectKernelBootAndLifecycle) {
    const auto xml = domain_xml(spec(), "d", "/s", "/opt/qemu/bin/qemu-system-x86_64");
    EXPECT_TRUE(has(xml, "<type arch='x86_64' machine='q35'>hvm</type>"));
    EXPECT_TRUE(has(xml, "<kernel>/k/vmlinuz</kernel>"));
    EXPECT_TRUE(has(xml, "<initrd>/run/x/initrd.gz</initrd>"));
    // The command line is the direct launcher's, escaped.
    EXPECT_TRUE(has(xml, "<cmdline>console=ttyS0 quiet panic=-1 blkrig.step=1 a=&lt;b&amp;c&gt;</cmdline>")) << xml;
    EXPECT_TRUE(has(xml, "<on_poweroff>destroy</on_poweroff>"));
    EXPECT_TRUE(has(xml, "<on_reboot>destroy</on_reboot>"));
    EXPECT_TRUE(has(xml, "<on_crash>destroy</on_crash>"));
    EXPECT_TRUE(has(xml, "<emulator>/opt/qemu/bin/qemu-system-x86_64</emulator>"));
}

TEST(LibvirtXml, ConsoleFileAndNamedChannels) {
    const auto xml = domain_xml(spec(), "d", "/s", "");
    EXPECT_TRUE(has(xml, "<serial type='file'>\n      <source path='/run/x/console.log'/>")) << xml;
    EXPECT_TRUE(has(xml, "<channel type='file'>\n      <source path='/run/x/results.jsonl'/>\n      <target type='virtio' name='blkrig.results'/>"));
    EXPECT_TRUE(has(xml, "<source path='/run/x/events.txt'/>\n      <target type='virtio' name='blkrig.events'/>"));
    EXPECT_FALSE(has(xml, "qemu:commandline"));
}

TEST(LibvirtXml, ExtraQemuArgsGoThroughTheQemuNamespace) {
    auto s = spec();
    s.qemu_args = {"-d", "guest_errors"};
    const auto xml = domain_xml(s, "d", "/s", "");
    EXPECT_TRUE(has(xml, "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"));
    EXPECT_TRUE(has(xml, "<qemu:arg value='-d'/>\n    <qemu:arg value='guest_errors'/>"));
}

// libvirt's own schema accepts the XML, when its validator is installed.
TEST(LibvirtXml, ValidAgainstLibvirtsSchema) {
    if (std::system("command -v virt-xml-validate >/dev/null 2>&1") != 0) GTEST_SKIP() << "virt-xml-validate not installed";
    TempDir dir;
    for (const auto& s : {spec(), [] {
                              auto q = spec();
                              q.qemu_args = {"-d", "guest_errors"};
                              return q;
                          }()}) {
        const std::string path = dir.file("domain.xml");
        std::ofstream(path) << domain_xml(s, "blkrig-1-ab", "/tmp/blkrig-Q/vu.sock", "/usr/bin/qemu-system-x86_64");
        const std::string cmd = "virt-xml-validate " + path + " domain >/dev/null 2>&1";
        EXPECT_EQ(std::system(cmd.c_str()), 0) << domain_xml(s, "blkrig-1-ab", "/tmp/blkrig-Q/vu.sock", "/usr/bin/qemu-system-x86_64");
    }
}

TEST(LibvirtUri, EmbedRoot) {
    EXPECT_EQ(embed_uri("/tmp/blkrig-x/libvirt"), "qemu:///embed?root=/tmp/blkrig-x/libvirt");
    EXPECT_EQ(embed_root("qemu:///embed?root=/tmp/blkrig-x/libvirt"), "/tmp/blkrig-x/libvirt");
    EXPECT_EQ(embed_root("qemu:///embed?root=%2Fa%20b&x=1"), "/a b");
    EXPECT_EQ(embed_root("qemu:///system"), "");
    EXPECT_EQ(embed_root("qemu+ssh://host/system"), "");
    const auto conf = embed_qemu_conf();
    for (const char* line : {"user = \"root\"", "group = \"root\"", "security_driver = \"none\"", "stdio_handler = \"file\""})
        EXPECT_TRUE(has(conf, line)) << line;
}

}  // namespace
}  // namespace blkrig::launch
