// Fuzzes the agent's run description parser (/etc/blkrig/run.json): any
// text is a RunSpec or a SpecError naming a field; nothing else may escape.
// A parsed description's mount options split as mount(8) would; a refusal
// becomes the error record the agent sends (one JSON line, whatever bytes
// the parser quoted).
#include "agent_core/result.hpp"
#include "agent_core/run_spec.hpp"

#include <cstdlib>
#include <string_view>

using namespace blkrig::agent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const RunSpec r = parse_run_spec(text);
        (void)split_mount_options(r.mount_options);
        if (r.extent_check) (void)split_mount_options(r.extent_check->options);
        for (const auto& s : r.steps) (void)op_name(s.op);
    } catch (const SpecError& e) {
        // The message names the field it is about.
        if (!std::string_view(e.what()).starts_with(e.field())) std::abort();
        const std::string rec = encode(ErrorRecord{e.what()});
        if (rec.empty() || rec.back() != '\n' || rec.find('\n') != rec.size() - 1) std::abort();
    }
    return 0;
}
