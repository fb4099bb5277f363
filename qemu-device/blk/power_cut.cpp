#include "blk/power_cut.hpp"
#include "blk/device.hpp"
#include "common/log.hpp"

#include "common/sectors.hpp"
#include "trace/format.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>

namespace blkrig::blk {

nlohmann::json cut_report_json(const store::CutReport& rep, store::CutMode mode, uint64_t seed, double share) {
    auto list = [](const std::vector<store::LoggedWrite>& ws) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& w : ws)
            a.push_back({{"seq", w.seq},
                         {"op", trace::op_label(w.type)},
                         {"sector", sectors::of_offset(w.offset)},
                         {"sectors", sectors::covering(w.bytes)}});
        return a;
    };
    nlohmann::json out = {{"mode", store::to_string(mode)}, {"seed", seed}, {"dropped", list(rep.dropped)}, {"kept", list(rep.kept)}};
    if (mode == store::CutMode::drop_random) out["share"] = share;
    if (rep.error) out["store_error"] = std::strerror(-rep.error);
    return out;
}

std::string cut_summary(const store::CutReport& rep, store::CutMode mode) {
    return fmt::format("power cut ({}): {} unflushed write(s) dropped, {} kept{}", store::to_string(mode), rep.dropped.size(),
                       rep.kept.size(), rep.error ? "; the store failed while restoring" : "");
}

bool write_cut_report(const std::string& path, const nlohmann::json& report) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    const std::string text = report.dump(2) + "\n";
    bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (f && std::fclose(f) != 0) ok = false;
    return ok;
}

// The device's side of it.
nlohmann::json BlkDevice::power_cut(store::CutMode mode, uint64_t seed, double share) {
    if (!wlog_) throw std::logic_error("the device has no write log (start it with --crash-model)");
    powered_off_ = true;
    const auto rep = wlog_->power_cut(mode, seed, share);
    const std::string text = cut_summary(rep, mode);
    log(rep.error ? LogLevel::error : LogLevel::info, "{}", text);
    if (trace_) trace_->event({monotonic_ns(), trace::EventCode::power_cut, 0, 0, text});
    return cut_report_json(rep, mode, seed, share);
}

void BlkDevice::power_on() {
    powered_off_ = false;
    log(LogLevel::info, "power on: serving the surviving contents");
}

}  // namespace blkrig::blk
