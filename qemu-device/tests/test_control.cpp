// The control plane's JSON-RPC without a socket: response_line as the
// server sends it and the method table over a device with no guest. Cases
// the control fuzzer (qemu-device/fuzz/fuzz_control.cpp) found, kept here.
#include "blk/device.hpp"
#include "control/methods.hpp"
#include "control/rpc.hpp"
#include "store/store.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace blkrig::control {
namespace {

using nlohmann::json;

struct Control {
    std::unique_ptr<store::Store> store = store::make_ram(2048 * 512);
    faults::Engine engine;
    blk::BlkDevice dev{[] {
                           blk::Geometry g;
                           g.capacity_sectors = 2048;
                           return g;
                       }(),
                       *store, nullptr, &engine};
    MethodTable methods = device_methods(engine, dev, nullptr);

    json call(const std::string& line) {
        const std::string out = response_line(line, methods);
        EXPECT_EQ(out.back(), '\n');
        return json::parse(out);  // throws if the server would send something that is not JSON
    }
};

TEST(Control, ALineThatIsNotUtf8GetsAParseErrorThatIsJson) {
    Control c;
    // nlohmann's parse error quotes the bytes it stopped at; dump() threw on
    // them and the exception ended the control thread (and the device).
    const json r = c.call("{\"jsonrpc\":\"2.0\",\"method\":\"\xff\xfe\"}");
    EXPECT_EQ(r["error"]["code"], -32700);
    EXPECT_NE(r["error"]["message"].get<std::string>().find("\xEF\xBF\xBD"), std::string::npos);  // U+FFFD
    EXPECT_TRUE(r["id"].is_null());
}

// Found by fuzz_control: value("jsonrpc", "") threw on a number, out of
// handle_line and the control thread.
TEST(Control, AJsonrpcMemberThatIsNotAStringIsAnInvalidRequest) {
    Control c;
    for (const char* line : {R"({"jsonrpc":2,"method":"stats","id":1})", R"({"jsonrpc":null,"method":"stats","id":1})"}) {
        const json r = c.call(line);
        EXPECT_EQ(r["error"]["code"], -32600) << line;
        EXPECT_EQ(r["id"], 1) << line;
    }
}

TEST(Control, AFaultIdAbove32BitsNamesNoRule) {
    Control c;
    const json added = c.call(R"({"jsonrpc":"2.0","id":1,"method":"fault.add","params":{"rule":"ioerr op=read"}})");
    const uint64_t id = added["result"]["id"].get<uint64_t>();
    // Its low 32 bits are the rule's id: it used to remove that rule.
    const json r = c.call(fmt::format(R"({{"jsonrpc":"2.0","id":2,"method":"fault.remove","params":{{"id":{}}}}})", id + (1ull << 32)));
    EXPECT_EQ(r["error"]["code"], -32602);
    EXPECT_NE(r["error"]["message"].get<std::string>().find(std::to_string(id + (1ull << 32))), std::string::npos);
    EXPECT_EQ(c.engine.list().size(), 1u);
    const json ok = c.call(fmt::format(R"({{"jsonrpc":"2.0","id":3,"method":"fault.remove","params":{{"id":{}}}}})", id));
    EXPECT_EQ(ok["result"]["removed"], true);
    EXPECT_TRUE(c.engine.list().empty());
}

TEST(Control, ReleaseByARuleIdAbove32BitsIsRefused) {
    Control c;
    const json r = c.call(R"({"jsonrpc":"2.0","id":1,"method":"request.release","params":{"rule":4294967296}})");
    EXPECT_EQ(r["error"]["code"], -32602);
    EXPECT_NE(r["error"]["message"].get<std::string>().find("32-bit"), std::string::npos);
}

}  // namespace
}  // namespace blkrig::control
