#include "report.hpp"

#include <cstdio>

namespace blkrig::agent {

void Reporter::send(const std::string& line) { port_.write(line); }

void Reporter::note(const std::string& what) {
    say_error(what);
    if (hello_sent_) {
        send(encode(ErrorRecord{what}));
    } else {
        pending_.push_back(what);
    }
}

void Reporter::hello(const Hello& h) {
    send(encode(h));
    hello_sent_ = true;
    for (const auto& what : pending_) send(encode(ErrorRecord{what}));
    pending_.clear();
    say("hello sent (kernel " + h.kernel + ", " + std::to_string(h.functions_traced.size()) + " functions and " +
        std::to_string(h.events.size()) + " events traced)");
}

void Reporter::before_steps(const BeforeSteps& b) {
    send(encode(b));
    std::string line = "before the steps: ";
    if (b.extent_check) {
        line += b.extent_check->error.empty() ? "extents of " + std::to_string(b.extent_check->files.size()) + " file(s) mapped; "
                                               : "extent check failed: " + b.extent_check->error + "; ";
    }
    line += "disk cache " + std::to_string(b.resident_before) + " -> " + std::to_string(b.resident_after) + " of " +
            std::to_string(b.disk_pages) + " pages";
    if (!b.cache_error.empty()) line += " (" + b.cache_error + ")";
    say(line);
}

void Reporter::step(const StepResult& r, const Step& s) {
    send(encode(r));
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.1f ms", static_cast<double>(r.t_end_ns - r.t_start_ns) / 1e6);
    std::string line = "step " + std::to_string(r.index) + " " + op_name(r.op);
    if (!s.path.empty()) line += " " + s.path;
    if (!s.fd.empty()) line += " fd " + s.fd;
    line += ": ret " + std::to_string(r.ret);
    if (r.ret != 0) line += " (" + (r.call.empty() ? "" : r.call + ": ") + r.error + ")";
    if (r.bytes) line += ", " + std::to_string(*r.bytes) + " bytes";
    line += ", " + std::string(ms);
    if (!r.marker_error.empty()) line += "; " + r.marker_error;
    say(line);
}

void Reporter::done(size_t steps) {
    send(encode(Done{steps}));
    say("done after " + std::to_string(steps) + " steps");
}

void Reporter::fatal(const std::string& what) noexcept {
    try {
        say_error(what);
        if (!port_.valid()) return;
        for (const auto& p : pending_) send(encode(ErrorRecord{p}));
        pending_.clear();
        send(encode(ErrorRecord{what}));
    } catch (...) {
        // The console line above is all that can be said.
    }
}

}  // namespace blkrig::agent
