#include "tracing.hpp"

#include "agent_core/ftrace_filter.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

namespace blkrig::agent {

namespace {

const std::string kTracing = "/sys/kernel/tracing/";

bool tracefs_mounted() { return ::access((kTracing + "tracing_on").c_str(), W_OK) == 0; }

const std::string kFilter = kTracing + "set_ftrace_filter";

// Replaces the filter with `words`, one write each; false (noted) if the file
// cannot be opened or a word is refused.
bool write_filter(const std::vector<std::string>& words, Reporter& rep) {
    UniqueFd fd(::open(kFilter.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (!fd.valid()) {
        rep.note(std::string("tracing: ") + SysError("open", kFilter, errno).what());
        return false;
    }
    bool ok = true;
    for (const auto& w : words) {
        // The kernel takes one word per write and says so with a short count.
        const std::string line = w + "\n";
        std::string_view left = line;
        while (!left.empty()) {
            const ssize_t n = ::write(fd.get(), left.data(), left.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                rep.note("tracing: set_ftrace_filter refused '" + w + "': " + errno_name(errno));
                ok = false;
                break;
            }
            left.remove_prefix(static_cast<size_t>(n));
        }
    }
    return ok;
}

std::vector<std::string> read_filter() {
    try {
        return filter_names(read_text(kFilter));
    } catch (const SysError&) {
        return {};
    }
}

std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
}

// Sets `lines`; true when the kernel says that set exactly `want`.
bool set_lines(const std::vector<uint64_t>& lines, const std::vector<std::string>& want, Reporter& rep) {
    std::string indices;
    for (const uint64_t line : lines) indices += (indices.empty() ? "" : " ") + std::to_string(line);
    return write_filter({indices}, rep) && sorted(read_filter()) == sorted(want);
}

// Sets the selection by line number, checks what the kernel says it set, and
// falls back to names if that differs (the index form is documented from
// 5.1; a kernel could number its list differently). Returns what is set;
// `lines` gets the lines when they were confirmed.
std::vector<std::string> set_filter(const FilterSelection& sel, std::vector<uint64_t>& lines, Reporter& rep) {
    const std::vector<uint64_t> want(sel.lines.begin(), sel.lines.end());
    if (set_lines(want, sel.selected, rep)) {
        lines = want;
        return sel.selected;
    }
    rep.note("tracing: setting the filter by line number set other functions; setting it by name");
    write_filter(sel.selected, rep);
    return read_filter();
}

}  // namespace

TracingSetup start_tracing(const TraceSpec& spec, Reporter& rep) {
    TracingSetup t;
    if (spec.events.empty() && spec.functions.empty()) return t;
    if (!tracefs_mounted()) {
        rep.note("tracing: tracefs is not mounted on " + kTracing + "; nothing is traced");
        t.functions_missing = spec.functions;
        t.events_missing = spec.events;
        return t;
    }
    auto knob = [&](const char* file, const std::string& value) {
        try {
            write_text(kTracing + file, value);
            return true;
        } catch (const SysError& e) {
            rep.note(std::string("tracing: ") + e.what());
            return false;
        }
    };
    knob("tracing_on", "0");
    knob("trace_clock", "mono");
    if (spec.buffer_kb > 0) knob("buffer_size_kb", std::to_string(spec.buffer_kb));

    if (!spec.functions.empty()) {
        // An earlier boot's lines first: the same kernel and modules number
        // their functions the same way, and the filter read back says so.
        if (spec.hint && !spec.hint->lines.empty() && set_lines(spec.hint->lines, spec.hint->selected, rep)) {
            t.filter_hint = "used";
            t.filter_lines = spec.hint->lines;
            t.functions_traced = spec.hint->selected;
            t.functions_missing = spec.hint->missing;
        } else {
            if (spec.hint && !spec.hint->lines.empty()) {
                t.filter_hint = "refused";
                rep.note("tracing: the filter hint's lines set other functions; reading available_filter_functions");
            }
            FilterSelection sel;
            try {
                sel = select_filters(read_text(kTracing + "available_filter_functions"), spec.functions);
            } catch (const SysError& e) {
                rep.note(std::string("tracing: ") + e.what());
                sel.missing = spec.functions;
            }
            t.functions_missing = sel.missing;
            if (!sel.selected.empty()) t.functions_traced = set_filter(sel, t.filter_lines, rep);
        }
        // An empty filter would trace every function in the kernel.
        if (!t.functions_traced.empty()) {
            if (!knob("current_tracer", "function")) {
                t.functions_traced.clear();
                t.filter_lines.clear();
            }
        } else {
            rep.note("tracing: none of the wanted functions exists in this kernel; the function tracer stays off");
        }
    }

    for (const auto& e : spec.events) {
        try {
            write_text(kTracing + "events/" + e + "/enable", "1");
            t.events.push_back(e);
        } catch (const SysError& err) {
            if (err.err() != ENOENT) rep.note(std::string("tracing: ") + err.what());
            t.events_missing.push_back(e);
        }
    }

    // Opening with O_TRUNC empties the buffer of what setup itself traced.
    UniqueFd clear(::open((kTracing + "trace").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    knob("tracing_on", "1");
    return t;
}

void stop_tracing(Reporter& rep) {
    if (!tracefs_mounted()) return;
    try {
        write_text(kTracing + "tracing_on", "0");
    } catch (const SysError& e) {
        rep.note(std::string("tracing: ") + e.what());
    }
}

void copy_trace(Port& events, Reporter& rep) {
    if (!events.valid() || !tracefs_mounted()) return;
    const std::string path = kTracing + "trace";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        rep.note(std::string("tracing: ") + SysError("open", path, errno).what());
        return;
    }
    std::string buf(1 << 16, '\0');
    size_t total = 0;
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rep.note(std::string("tracing: ") + SysError("read", path, errno).what());
            return;
        }
        if (n == 0) break;
        events.write(std::string_view(buf.data(), static_cast<size_t>(n)));
        total += static_cast<size_t>(n);
    }
    say("guest trace sent: " + std::to_string(total) + " bytes");
}

}  // namespace blkrig::agent
