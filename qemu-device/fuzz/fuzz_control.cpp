// Fuzzes the control plane: each input is a session of JSON-RPC request
// lines, answered by the real method table over a device with no guest (RAM
// store, crash model, fault engine, trace). Every answer must serialise as
// the server sends it (one JSON line) and be a JSON-RPC response to that
// line: the request's id, and a result or an error with a known code.
#include "blk/device.hpp"
#include "common/log.hpp"
#include "control/methods.hpp"
#include "control/rpc.hpp"

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

using namespace blkrig;
using nlohmann::json;

namespace {

// The trace lives in one scratch file, replaced for every input and
// removed with its folder when the fuzzer exits.
char g_dir[] = "/tmp/blkrig-fuzz-control-XXXXXX";

std::string trace_path() {
    static const std::string path = [] {
        if (!::mkdtemp(g_dir)) std::abort();
        std::atexit([] {
            ::unlink((std::string(g_dir) + "/trace.bin").c_str());
            ::rmdir(g_dir);
        });
        return std::string(g_dir) + "/trace.bin";
    }();
    return path;
}

bool known_code(const json& e) {
    if (!e.is_object() || !e.contains("code") || !e["code"].is_number_integer() || !e.contains("message") || !e["message"].is_string())
        return false;
    const int c = e["code"].get<int>();
    return c == -32700 || c == -32600 || c == -32601 || c == -32602 || c == -32000;
}

}  // namespace

// The device's log would be most of the time spent (format strings are
// checked when compiled, so nothing is lost by not writing it);
// BLKRIG_FUZZ_LOG=1 keeps it, to see what a crashing input did.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (!std::getenv("BLKRIG_FUZZ_LOG")) log_threshold() = static_cast<int>(LogLevel::error) + 1;
    else log_threshold() = static_cast<int>(LogLevel::debug);
    return 0;
}

// The device outlives inputs (a device per input would spend the time
// starting its threads); each input starts with no rules and the power on,
// and the trace is started afresh every 4096 inputs so marks do not pile up.
struct State {
    static constexpr uint64_t kCapacity = 2048;
    std::unique_ptr<store::Store> store = store::make_ram(kCapacity * 512);
    store::WriteLog wlog{*store, ""};
    faults::Engine engine;
    std::unique_ptr<trace::Writer> trace;
    blk::BlkDevice dev;
    control::MethodTable methods;

    State()
        : trace([] {
              ::unlink(trace_path().c_str());
              trace::FileHeader fh{};
              fh.capacity_sectors = kCapacity;
              return std::make_unique<trace::Writer>(trace_path(), fh, "{}");
          }()),
          dev(
              [] {
                  blk::Geometry g;
                  g.capacity_sectors = kCapacity;
                  g.marker_sectors = 64;
                  return g;
              }(),
              *store, trace.get(), &engine, &wlog),
          methods(control::device_methods(engine, dev, trace.get())) {}
};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static std::unique_ptr<State> st;
    static uint64_t inputs = 0;
    if (inputs++ % 4096 == 0) {
        st.reset();
        st = std::make_unique<State>();
    }
    auto& engine = st->engine;
    auto& dev = st->dev;
    const auto& methods = st->methods;
    engine.clear();
    if (dev.powered_off()) dev.power_on();

    // Split into lines as the server does; the tail without a newline is a
    // line too (the server answers it when it is too long, else waits).
    std::string_view rest(reinterpret_cast<const char*>(data), size);
    while (!rest.empty()) {
        const size_t nl = rest.find('\n');
        const std::string line(rest.substr(0, nl));
        rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
        const std::string wire = control::response_line(line, methods);  // what Server::serve sends
        if (wire.empty() || wire.back() != '\n' || wire.find('\n') != wire.size() - 1) std::abort();
        const json back = json::parse(wire);
        if (!back.is_object() || back.value("jsonrpc", "") != "2.0" || !back.contains("id")) std::abort();
        if (back.contains("result") == back.contains("error")) std::abort();
        if (back.contains("error") && !known_code(back["error"])) std::abort();
    }
    return 0;
}
