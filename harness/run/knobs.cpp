#include "run/knobs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>

namespace blkrig::run {

using nlohmann::json;

namespace {

const char* const kSysDir = "/sys/block/vda/";

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string part;
    std::istringstream in(s);
    while (std::getline(in, part, sep))
        if (!part.empty()) out.push_back(part);
    return out;
}

// "[mq-deadline] none" → "mq-deadline"; a queue without elevators reads "none".
std::string active_scheduler(const std::string& s) {
    const auto lb = s.find('['), rb = s.find(']');
    if (lb == std::string::npos || rb == std::string::npos || rb < lb) return s;
    return s.substr(lb + 1, rb - lb - 1);
}

// "0-1,3" → 3 CPUs.
size_t count_cpus(const std::string& list) {
    size_t n = 0;
    for (const auto& part : split(list, ',')) {
        const auto dash = part.find('-');
        try {
            if (dash == std::string::npos) {
                std::stoul(part);
                ++n;
            } else {
                n += std::stoul(part.substr(dash + 1)) - std::stoul(part.substr(0, dash)) + 1;
            }
        } catch (const std::exception&) {
        }
    }
    return n;
}

// Octal and decimal option values compare as numbers ("fmask=022" shows
// as "fmask=0022"); anything else as text.
bool same_value(const std::string& a, const std::string& b) {
    auto strip = [](const std::string& s) {
        if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return s;
        const auto nz = s.find_first_not_of('0');
        return nz == std::string::npos ? std::string("0") : s.substr(nz);
    };
    return strip(a) == strip(b);
}

// How one mount(8) word shows up in /proc/self/mounts' options: present
// (a word that must be there) or absent (a word that must not be).
struct MountWord {
    const char* word;
    const char* must_have;     // nullptr: nothing required
    const char* must_not_have; // nullptr: nothing excluded
};
const MountWord kMountWords[] = {
    {"defaults", nullptr, nullptr}, {"ro", "ro", nullptr},         {"rw", "rw", nullptr},
    {"nosuid", "nosuid", nullptr},  {"suid", nullptr, "nosuid"},   {"nodev", "nodev", nullptr},
    {"dev", nullptr, "nodev"},      {"noexec", "noexec", nullptr}, {"exec", nullptr, "noexec"},
    {"sync", "sync", nullptr},      {"async", nullptr, "sync"},    {"dirsync", "dirsync", nullptr},
    {"noatime", "noatime", nullptr}, {"nodiratime", "nodiratime", nullptr}, {"relatime", "relatime", nullptr},
    {"strictatime", nullptr, "relatime"}, {"lazytime", "lazytime", nullptr},
};

// Empty when every asked option shows up; else which did not.
std::string missing_mount_options(const std::string& asked, const std::string& found) {
    const auto have = split(found, ',');
    auto has = [&](const std::string& w) { return std::find(have.begin(), have.end(), w) != have.end(); };
    std::vector<std::string> missing;
    for (const auto& w : split(asked, ',')) {
        const MountWord* known = nullptr;
        for (const auto& m : kMountWords)
            if (w == m.word) known = &m;
        if (known) {
            if ((known->must_have && !has(known->must_have)) || (known->must_not_have && has(known->must_not_have)))
                missing.push_back(w);
            continue;
        }
        const auto eq = w.find('=');
        if (eq == std::string::npos) {
            if (!has(w)) missing.push_back(w);
            continue;
        }
        bool ok = false;
        for (const auto& h : have) {
            const auto heq = h.find('=');
            if (heq != std::string::npos && h.substr(0, heq) == w.substr(0, eq) && same_value(h.substr(heq + 1), w.substr(eq + 1))) ok = true;
        }
        if (!ok) missing.push_back(w);
    }
    std::string out;
    for (const auto& m : missing) out += (out.empty() ? "" : ", ") + m;
    return out;
}

class Checker {
public:
    Checker(const scenario::Scenario& sc, const json& hello) : sc_(sc), sysfs_(hello.value("sysfs", json::object())) {}

    // The attribute under /sys/block/vda/, or nothing.
    std::optional<std::string> attr(const std::string& key) const {
        const auto it = sysfs_.find(key);
        if (it == sysfs_.end() || !it->is_string()) return std::nullopt;
        return it->get<std::string>();
    }

    // One knob against one attribute; applied(found) decides, hint explains a miss.
    template <typename Pred>
    void sysfs_knob(const std::string& knob, const std::string& asked, const std::string& key, Pred applied, const std::string& hint = "") {
        KnobReading k{knob, asked, "", kSysDir + key, false, ""};
        if (const auto v = attr(key)) {
            k.found = *v;
            k.applied = applied(*v);
            if (!k.applied)
                k.problem = fmt::format("{}: {} = {} was not applied: the guest reads \"{}\" from {}{}", sc_.file, knob, asked, *v, k.read_from,
                                        hint.empty() ? "" : " (" + hint + ")");
        } else {
            k.problem = fmt::format("{}: {} = {} cannot be confirmed: the guest kernel has no {}", sc_.file, knob, asked, k.read_from);
        }
        add(std::move(k));
    }

    void add(KnobReading k) {
        if (!k.applied) report_.problems.push_back(k.problem);
        report_.knobs.push_back(std::move(k));
    }

    KnobReport report_;
    const scenario::Scenario& sc_;
    const json sysfs_;
};

auto equals(const std::string& want) {
    return [want](const std::string& v) { return v == want; };
}

}  // namespace

KnobReport check_knobs(const scenario::Scenario& sc, const json& hello, const json& mount_result) {
    if (!hello.is_object()) return {};
    Checker c(sc, hello);
    const auto& d = sc.device;

    // [device]: blkrig-device's config space as the guest's virtio_blk took it.
    c.sysfs_knob("device.logical_block_size", std::to_string(d.logical_block_size), "queue/logical_block_size",
                 equals(std::to_string(d.logical_block_size)));
    c.sysfs_knob("device.seg_max", std::to_string(d.seg_max), "queue/max_segments", equals(std::to_string(d.seg_max)));
    if (d.size_max)
        c.sysfs_knob("device.size_max", std::to_string(d.size_max), "queue/max_segment_size", equals(std::to_string(d.size_max)),
                     "the kernel raises a segment limit below its page size");
    c.sysfs_knob("device.write_cache", d.write_cache ? "true" : "false", "queue/write_cache",
                 equals(d.write_cache ? "write back" : "write through"));
    c.sysfs_knob("device.read_only", d.read_only ? "true" : "false", "ro", equals(d.read_only ? "1" : "0"));

    // Queues: a hardware context per virtqueue, each with a CPU of its own
    // and a tag per ring entry (virtio_blk fills the ring; with indirect
    // descriptors a request takes one entry).
    {
        std::vector<std::string> hctx;
        for (unsigned q = 0; c.attr(fmt::format("mq/{}/nr_tags", q)); ++q) hctx.push_back(std::to_string(q));
        const std::string online = hello.value("cpus_online", std::string());
        KnobReading k{"device.num_queues", std::to_string(d.num_queues), "", std::string(kSysDir) + "mq/*/cpu_list", false, ""};
        std::vector<std::string> idle;
        std::string found;
        for (const auto& q : hctx) {
            const std::string cpus = c.attr("mq/" + q + "/cpu_list").value_or("");
            found += fmt::format("{}hctx {}: cpus {}", found.empty() ? "" : "; ", q, cpus.empty() ? "none" : cpus);
            if (cpus.empty()) idle.push_back(q);
        }
        k.found = fmt::format("{} queues ({}), cpus online {}", hctx.size(), found, online.empty() ? "?" : online);
        k.applied = hctx.size() == d.num_queues && idle.empty();
        if (hctx.size() != d.num_queues)
            k.problem = fmt::format("{}: device.num_queues = {} was not applied: the guest has {} hardware queues in {}mq/", sc.file, d.num_queues,
                                    hctx.size(), kSysDir);
        else if (!idle.empty())
            k.problem = fmt::format("{}: device.num_queues = {} was not applied: no guest CPU maps to queue {} ({} CPUs online: {}); "
                                    "the guest gets a CPU per queue",
                                    sc.file, d.num_queues, idle.front(), count_cpus(online), online);
        c.add(std::move(k));

        KnobReading t{"device.queue_size", std::to_string(d.queue_size), "", std::string(kSysDir) + "mq/*/nr_tags", !hctx.empty(), ""};
        for (const auto& q : hctx) {
            const std::string tags = c.attr("mq/" + q + "/nr_tags").value_or("");
            t.found += (t.found.empty() ? "" : " ") + tags;
            if (tags != std::to_string(d.queue_size) && t.applied) {
                t.applied = false;
                t.problem = fmt::format("{}: device.queue_size = {} was not applied: the guest's queue {} has {} tags ({}mq/{}/nr_tags), "
                                        "one per ring entry was expected",
                                        sc.file, d.queue_size, q, tags, kSysDir, q);
            }
        }
        if (hctx.empty()) t.problem = fmt::format("{}: device.queue_size = {} cannot be confirmed: the guest kernel has no {}mq/", sc.file, d.queue_size, kSysDir);
        c.add(std::move(t));
    }

    // [guest]: the queue attributes the agent wrote.
    for (const auto& kv : sc.guest.queue) {
        // Plain names, not a structured binding: the lambdas below capture them.
        const std::string& key = kv.first;
        const std::string& value = kv.second;
        const std::string knob = "guest." + key;
        if (key == "scheduler") {
            c.sysfs_knob(knob, value, "queue/scheduler", [&](const std::string& v) { return active_scheduler(v) == value; },
                         "the bracketed one is in use; the others are what this kernel offers");
        } else if (key == "max_sectors_kb") {
            const std::string hw = c.attr("queue/max_hw_sectors_kb").value_or("?");
            c.sysfs_knob(knob, value, "queue/" + key, [&](const std::string& v) { return same_value(v, value); },
                         fmt::format("max_hw_sectors_kb is {}: the kernel refuses more than that and less than a page", hw));
        } else if (key == "read_ahead_kb") {
            c.sysfs_knob(knob, value, "queue/" + key, [&](const std::string& v) { return same_value(v, value); },
                         "the kernel keeps whole pages of readahead");
        } else {
            c.sysfs_knob(knob, value, "queue/" + key, [&](const std::string& v) { return same_value(v, value); });
        }
    }

    // mount_options: as the first mount left them.
    if (!sc.guest.mount_options.empty() && mount_result.is_object() && mount_result.value("ret", -1) == 0) {
        KnobReading k{"guest.mount_options", sc.guest.mount_options, mount_result.value("mount_options", std::string()),
                      std::string("/proc/self/mounts (") + scenario::kMountpoint + ")", false, ""};
        if (!mount_result.contains("mount_options")) {
            k.problem = fmt::format("{}: guest.mount_options = \"{}\" cannot be confirmed: {} was not in the guest's /proc/self/mounts after the mount",
                                    sc.file, k.asked, scenario::kMountpoint);
        } else {
            const std::string missing = missing_mount_options(k.asked, k.found);
            k.applied = missing.empty();
            if (!k.applied)
                k.problem = fmt::format("{}: guest.mount_options = \"{}\" was not applied: {} is mounted with \"{}\" ({} missing)", sc.file,
                                        k.asked, scenario::kMountpoint, k.found, missing);
        }
        c.add(std::move(k));
    }
    return c.report_;
}

json to_json(const KnobReport& r, const json& hello) {
    json knobs = json::array();
    for (const auto& k : r.knobs) {
        json j = {{"knob", k.knob}, {"asked", k.asked}, {"found", k.found}, {"read_from", k.read_from}, {"applied", k.applied}};
        if (!k.problem.empty()) j["problem"] = k.problem;
        knobs.push_back(std::move(j));
    }
    return {{"knobs", knobs},
            {"sysfs", hello.is_object() ? hello.value("sysfs", json::object()) : json::object()},
            {"cpus_online", hello.is_object() ? hello.value("cpus_online", std::string()) : std::string()}};
}

// ftrace's buffer per CPU ([guest] trace_buffer, else sized from the steps).
// The guest allocates all of it before step 0, page by page, and under TCG
// a 16 MiB buffer was the largest single part of the agent's set-up. So a run asks
// for 1 MiB plus 512 bytes for every block its steps can move (a block:
// the step's bs, at most a page): a 4 KiB direct read makes about six block
// events, a buffered page one or two mpage functions as well, and a
// readahead or writeback bio covers many pages at once. A read
// to EOF counts its file's built size, or the whole disk when a step may
// have grown the file. All of a step's events may land on one CPU, so each
// CPU gets the whole budget, within the sizes used before: 16 MiB each up
// to 4 CPUs, then 64 MiB shared. An overrun is reported, never silent
// (run_model's check of events.txt's header).
int64_t trace_buffer_kb(const scenario::Scenario& sc) {
    if (sc.guest.trace_buffer_kb) return static_cast<int64_t>(sc.guest.trace_buffer_kb);
    const unsigned cpus = std::max<unsigned>(sc.device.num_queues, 1);
    const int64_t cap = std::clamp<int64_t>(65536 / cpus, 1024, 16384);
    bool grown = false;  // a step may make a file longer than the disk built it
    for (const auto& st : sc.steps) grown |= st.op == "write" || st.op == "mmap_write" || st.op == "truncate" || st.op == "rename";
    double blocks = 0;
    for (const auto& st : sc.steps) {
        if (st.op != "read" && st.op != "write" && st.op != "mmap_write") continue;
        const int64_t bs = st.op == "mmap_write" ? 4096 : std::clamp<int64_t>(st.args.value("bs", int64_t{4096}), 1, 4096);
        double bytes = static_cast<double>(st.args.value("length", int64_t{-1}));
        if (bytes < 0) {
            bytes = static_cast<double>(sc.disk.size_bytes);
            const std::string path = st.args.value("path", "");
            if (!grown)
                for (const auto& f : sc.disk.files)
                    if (path == std::string(scenario::kMountpoint) + f.path) bytes = static_cast<double>(f.size_bytes);
        }
        blocks += bytes / static_cast<double>(bs);
    }
    return std::min<int64_t>(cap, 1024 + static_cast<int64_t>(blocks * 512 / 1024));
}

}  // namespace blkrig::run
