// blkrig_model: the run model and the checks for Python (pytest). A thin
// layer: every answer comes from model/queries.hpp and checks/expect.hpp,
// turned into plain Python values. docs/harness.md documents the API.
#include "checks/expect.hpp"
#include "model/queries.hpp"
#include "model/run_model.hpp"
#include "trace/format.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <fmt/format.h>

#include <memory>

namespace py = pybind11;
using namespace blkrig;

namespace {

py::object to_py(const nlohmann::json& j) {
    switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get_ref<const std::string&>());
    case nlohmann::json::value_t::array: {
        py::list l;
        for (const auto& x : j) l.append(to_py(x));
        return l;
    }
    case nlohmann::json::value_t::object: {
        py::dict d;
        for (const auto& [k, v] : j.items()) d[py::str(k)] = to_py(v);
        return d;
    }
    default: return py::none();
    }
}

nlohmann::json from_py(const py::handle& o, const std::string& where) {
    if (o.is_none()) return nullptr;
    if (py::isinstance<py::bool_>(o)) return o.cast<bool>();
    if (py::isinstance<py::int_>(o)) return o.cast<int64_t>();
    if (py::isinstance<py::float_>(o)) return o.cast<double>();
    if (py::isinstance<py::str>(o)) return o.cast<std::string>();
    if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o) || py::isinstance<py::set>(o) || py::isinstance<py::frozenset>(o)) {
        nlohmann::json a = nlohmann::json::array();
        for (auto x : o) a.push_back(from_py(x, where));
        return a;
    }
    throw py::value_error(fmt::format("{}: {} values are not supported (use str, int, float, bool or a list)", where,
                                      py::str(py::type::of(o).attr("__name__")).cast<std::string>()));
}

struct PyStep {
    int index, agent_index;
    std::string op, path;
    bool ran, ok;
    int64_t ret, errno_value;
    std::string error, call;
    uint64_t bytes;
    std::optional<int64_t> first_seq, last_seq, marker_begin, marker_end;
    py::object result, args;
};

PyStep make_step(const model::Step& s) {
    auto opt = [](int64_t v) { return v < 0 ? std::nullopt : std::optional<int64_t>(v); };
    // first_seq/last_seq are known when both markers are: last_seq may then be first_seq - 1 (no requests).
    return {s.index,
            s.agent_index,
            s.op,
            s.path,
            s.ran,
            s.ok,
            s.ret,
            s.errno_value,
            s.error,
            s.call,
            s.bytes,
            s.bracketed ? std::optional<int64_t>(s.first_seq) : std::nullopt,
            s.bracketed ? std::optional<int64_t>(s.last_seq) : std::nullopt,
            opt(s.marker_begin),
            opt(s.marker_end),
            to_py(s.result),
            to_py(s.args)};
}

// A request as Python sees it: the device's record itself (its fields are
// read from it, not copied one by one), and what correlation adds.
struct PyRequest {
    model::Request rec;
    std::vector<std::pair<uint64_t, uint64_t>> bios;
    std::string guest_rwbs;
    std::string file;
    int64_t file_offset = -1;
    uint64_t file_bytes = 0;
    std::optional<int> step;
    std::optional<int> guest_cpu;  // the CPU its matched block_rq_issue was traced on
};

PyRequest make_request(const model::Run& run, const model::Request& r, const model::FileHit* hit = nullptr, int hit_file = -1) {
    PyRequest p;
    p.rec = r;
    if (r.issue >= 0) {
        const auto& is = run.issues[static_cast<size_t>(r.issue)];
        if (const int16_t cpu = run.guest.events[is.event].cpu; cpu >= 0) p.guest_cpu = cpu;
        for (uint32_t k = 0; k < is.bios_count; ++k) {
            const auto& b = run.bios[is.bios_begin + k];
            p.bios.emplace_back(b.sector, b.sectors);
        }
    }
    p.guest_rwbs = model::guest_rwbs(run, r);
    if (hit) {
        p.file = run.files[static_cast<size_t>(hit_file)].guest_path;
        p.file_offset = static_cast<int64_t>(hit->file_offset);
        p.file_bytes = hit->file_bytes;
    } else if (r.file >= 0) {
        p.file = run.files[static_cast<size_t>(r.file)].guest_path;
        p.file_offset = static_cast<int64_t>(r.file_offset);
        for (const auto& h : model::file_hits(run, r.file, {&r})) p.file_bytes = h.file_bytes;
    }
    p.step = r.step >= 0 && run.steps[static_cast<size_t>(r.step)].index >= 0 ? std::optional<int>(run.steps[static_cast<size_t>(r.step)].index)
                                                                                 : std::nullopt;
    return p;
}

std::string fault_action(const PyRequest& p) { return p.rec.fault_action ? trace::fault_action_name(p.rec.fault_action) : ""; }

std::string repr(const PyRequest& p) {
    const auto& r = p.rec;
    std::string s = fmt::format("<Request seq={} {} {}+{} {}B {}seg {}", r.seq, r.op(), r.sector, r.sectors(), r.bytes, r.nsegs,
                                trace::status_label(r.status));
    if (!p.file.empty()) s += fmt::format(" {}@{}", p.file, p.file_offset);
    if (r.fault_action) s += fmt::format(" fault {} {}", r.fault_rule, fault_action(p));
    return s + ">";
}

struct PyCheckResult {
    bool ok;
    std::string message;
    std::optional<uint64_t> offender_seq;
    uint64_t offenders;
    std::vector<checks::CheckResult> results;
};

// A loaded run; shared so Request/Step lists outlive nothing they point into (they copy).
class PyRun {
public:
    explicit PyRun(model::Run r) : run_(std::make_shared<model::Run>(std::move(r))) {}
    const model::Run& run() const { return *run_; }

    model::Filter filter(std::optional<int> step, std::optional<std::string> op) const {
        model::Filter f;
        f.step = step;
        f.op = std::move(op);
        return f;
    }
    std::vector<PyStep> steps(bool all) const {
        std::vector<PyStep> out;
        for (const auto& s : run_->steps)
            if (all || s.index >= 0) out.push_back(make_step(s));
        return out;
    }
    std::vector<PyRequest> requests(std::optional<int> step, std::optional<std::string> op) const {
        std::vector<PyRequest> out;
        const auto reqs = model::requests(*run_, filter(step, op));
        out.reserve(reqs.size());
        for (const auto* r : reqs) out.push_back(make_request(*run_, *r));
        return out;
    }
    py::list guest_events(std::optional<int> step, std::optional<std::string> event) const {
        size_t b = 0, e = run_->guest.events.size();
        if (step) {
            const auto& s = model::step_or_throw(*run_, *step);
            if (!s.guest_bracketed) return py::list();
            b = s.guest_begin;
            e = s.guest_end;
        }
        py::list out;
        for (const auto& j : run_->guest_json(b, e))
            if (!event || j.value("event", "") == *event) out.append(to_py(j));
        return out;
    }
    std::vector<PyRequest> file_requests(const std::string& path, std::optional<int> step, std::optional<std::string> op) const {
        const int fi = model::file_or_throw(*run_, path);
        std::vector<PyRequest> out;
        for (const auto& h : model::file_requests(*run_, fi, filter(step, op))) out.push_back(make_request(*run_, *h.request, &h, fi));
        return out;
    }
    std::optional<PyRequest> request_at(const std::string& path, uint64_t offset, std::optional<std::string> op, std::optional<int> step) const {
        const int fi = model::file_or_throw(*run_, path);
        const model::Request* r = model::request_at(*run_, fi, offset, filter(step, op));
        if (!r) return std::nullopt;
        const auto hits = model::file_hits(*run_, fi, {r});
        return make_request(*run_, *r, hits.empty() ? nullptr : &hits[0], fi);
    }
    std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> extents(const std::string& path) const {
        std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> out;
        for (const auto& e : run_->files[static_cast<size_t>(model::file_or_throw(*run_, path))].extents)
            out.emplace_back(e.file_offset, e.sector, e.sectors);
        return out;
    }
    std::vector<const model::Request*> sel(std::optional<int> step, std::optional<std::string> op) const {
        return model::requests(*run_, filter(step, std::move(op)));
    }

private:
    std::shared_ptr<model::Run> run_;
};

PyCheckResult run_check(const PyRun& run, const py::dict& expectation) {
    nlohmann::json table = nlohmann::json::object();
    for (auto [k, v] : expectation) {
        if (!py::isinstance<py::str>(k)) throw py::value_error("expectation keys must be strings");
        const std::string key = k.cast<std::string>();
        table[key] = from_py(v, "expectation key '" + key + "'");
    }
    // ExpectError derives from std::invalid_argument: Python sees ValueError.
    const auto e = checks::parse_expectation(table, "expectation");
    PyCheckResult out{true, "", std::nullopt, 0, checks::check(run.run(), e)};
    std::string failed, passed;
    for (const auto& r : out.results) {
        if (r.ok) {
            passed += (passed.empty() ? "" : "; ") + r.message;
            continue;
        }
        out.ok = false;
        failed += (failed.empty() ? "" : "; ") + r.message;
        if (!out.offender_seq) out.offender_seq = r.offender_seq;
        out.offenders += r.offenders;
    }
    out.message = out.ok ? passed : failed;
    return out;
}

}  // namespace

PYBIND11_MODULE(blkrig_model, m) {
    m.doc() = "blkrig's run model: a `blkrig run` folder's steps, device requests and guest events, correlated; and the checks.";

    static py::exception<model::RunError> run_error(m, "RunError");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const model::RunError& e) {
            run_error(e.what());
        }
    });

    py::class_<PyStep>(m, "Step")
        .def_readonly("index", &PyStep::index, "the scenario's step index (-1: a step the run added)")
        .def_readonly("agent_index", &PyStep::agent_index)
        .def_readonly("op", &PyStep::op)
        .def_readonly("path", &PyStep::path)
        .def_readonly("ran", &PyStep::ran)
        .def_readonly("ok", &PyStep::ok)
        .def_readonly("ret", &PyStep::ret)
        .def_readonly("errno", &PyStep::errno_value)
        .def_readonly("error", &PyStep::error)
        .def_readonly("call", &PyStep::call)
        .def_readonly("bytes", &PyStep::bytes)
        .def_readonly("first_seq", &PyStep::first_seq, "first device seq inside the step's markers (None: a marker is missing)")
        .def_readonly("last_seq", &PyStep::last_seq, "last device seq inside the step's markers (first_seq - 1 when none)")
        .def_readonly("marker_begin", &PyStep::marker_begin)
        .def_readonly("marker_end", &PyStep::marker_end)
        .def_readonly("result", &PyStep::result)
        .def_readonly("args", &PyStep::args)
        .def("__repr__", [](const PyStep& s) {
            return fmt::format("<Step {} {}{}{} ret={}>", s.index, s.op, s.path.empty() ? "" : " ", s.path, s.ret);
        });

    py::class_<PyRequest>(m, "Request")
        .def_property_readonly("seq", [](const PyRequest& p) { return p.rec.seq; })
        .def_property_readonly("queue", [](const PyRequest& p) { return p.rec.queue; })
        .def_property_readonly("head", [](const PyRequest& p) { return p.rec.head; })
        .def_property_readonly("op", [](const PyRequest& p) { return p.rec.op(); })
        .def_property_readonly("sector", [](const PyRequest& p) { return p.rec.sector; })
        .def_property_readonly("sectors", [](const PyRequest& p) { return p.rec.sectors(); })
        .def_property_readonly("end_sector", [](const PyRequest& p) { return p.rec.end_sector(); })
        .def_property_readonly("bytes", [](const PyRequest& p) { return p.rec.bytes; })
        .def_property_readonly("nsegs", [](const PyRequest& p) { return p.rec.nsegs; })
        .def_property_readonly("seg_lens", [](const PyRequest& p) { return p.rec.seg_lens; })
        .def_property_readonly("status", [](const PyRequest& p) { return std::string(trace::status_label(p.rec.status)); })
        .def_property_readonly("t_submit_ns", [](const PyRequest& p) { return p.rec.t_submit_ns; })
        .def_property_readonly("t_complete_ns", [](const PyRequest& p) { return p.rec.t_complete_ns; })
        .def_property_readonly("fault_rule", [](const PyRequest& p) { return p.rec.fault_rule; })
        .def_property_readonly("fault_action", &fault_action)
        .def_property_readonly("fault_delay_ns", [](const PyRequest& p) { return p.rec.fault_delay_ns; })
        .def_property_readonly("malformed", [](const PyRequest& p) { return (p.rec.flags & trace::kReqMalformed) != 0; })
        .def_property_readonly("unfinished", [](const PyRequest& p) { return (p.rec.flags & trace::kReqUnfinished) != 0; })
        .def_readonly("bios", &PyRequest::bios)
        .def_readonly("guest_rwbs", &PyRequest::guest_rwbs)
        .def_readonly("file", &PyRequest::file)
        .def_readonly("file_offset", &PyRequest::file_offset)
        .def_readonly("file_bytes", &PyRequest::file_bytes)
        .def_readonly("step", &PyRequest::step)
        .def_readonly("guest_cpu", &PyRequest::guest_cpu, "the guest CPU its block_rq_issue ran on (None: unmatched or not traced)")
        .def("__repr__", &repr);

    py::class_<PyCheckResult>(m, "CheckResult")
        .def_readonly("ok", &PyCheckResult::ok)
        .def_readonly("message", &PyCheckResult::message)
        .def_readonly("offender_seq", &PyCheckResult::offender_seq)
        .def_readonly("offenders", &PyCheckResult::offenders)
        .def("__bool__", [](const PyCheckResult& r) { return r.ok; })
        .def("__repr__", [](const PyCheckResult& r) { return fmt::format("<CheckResult {}: {}>", r.ok ? "ok" : "FAILED", r.message); });

    using OptInt = std::optional<int>;
    using OptStr = std::optional<std::string>;
    py::class_<PyRun>(m, "Run")
        .def_property_readonly("steps", [](const PyRun& r) { return r.steps(false); }, "the scenario's steps, by index")
        .def_property_readonly("agent_steps", [](const PyRun& r) { return r.steps(true); }, "every step the agent ran (run folders of older versions also hold the FIEMAP steps they added)")
        .def_property_readonly("findings", [](const PyRun& r) { return r.run().findings; })
        .def_property_readonly("notes", [](const PyRun& r) { return r.run().notes; })
        .def_property_readonly("files", [](const PyRun& r) {
            std::vector<std::string> out;
            for (const auto& f : r.run().files) out.push_back(f.guest_path);
            return out;
        })
        .def_property_readonly("dir", [](const PyRun& r) { return r.run().dir; })
        .def_property_readonly("test_dev", [](const PyRun& r) { return r.run().test_dev; })
        .def_property_readonly("queue_of_cpu", [](const PyRun& r) { return r.run().queue_of_cpu; },
                               "the guest's CPU → hardware queue map (index: CPU; -1: no queue), [] if not reported")
        .def_property_readonly("trace_incomplete", [](const PyRun& r) { return r.run().trace_incomplete; })
        .def("step", [](const PyRun& r, int i) { return make_step(model::step_or_throw(r.run(), i)); }, py::arg("index"))
        .def("file_size", [](const PyRun& r, const std::string& p) { return r.run().files[static_cast<size_t>(model::file_or_throw(r.run(), p))].size; },
             py::arg("path"))
        .def("requests", &PyRun::requests, py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("guest_events", &PyRun::guest_events, py::arg("step") = py::none(), py::arg("event") = py::none())
        .def("functions_hit", [](const PyRun& r, OptInt step) { return model::functions_hit(r.run(), step); }, py::arg("step") = py::none())
        .def("file_requests", &PyRun::file_requests, py::arg("path"), py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("request_at", &PyRun::request_at, py::arg("path"), py::arg("offset"), py::arg("op") = "read", py::arg("step") = py::none())
        .def("extents", &PyRun::extents, py::arg("path"))
        .def("merge_ratio", [](const PyRun& r, OptInt step, OptStr op) { return model::merge_ratio(r.run(), r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("ascending_runs", [](const PyRun& r, OptInt step, OptStr op) { return model::ascending_runs(r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("contiguous_runs", [](const PyRun& r, OptInt step, OptStr op) { return model::contiguous_runs(r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("backward_seeks", [](const PyRun& r, OptInt step, OptStr op) { return model::backward_seeks(r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("size_histogram", [](const PyRun& r, OptInt step, OptStr op) { return model::size_histogram(r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("segment_histogram", [](const PyRun& r, OptInt step, OptStr op) { return model::segment_histogram(r.sel(step, op)); },
             py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("fault_hits", [](const PyRun& r, OptInt step, OptStr op) {
            std::vector<PyRequest> out;
            for (const auto* q : model::fault_hits(r.sel(step, op))) out.push_back(make_request(r.run(), *q));
            return out;
        }, py::arg("step") = py::none(), py::arg("op") = py::none())
        .def("check", &run_check, py::arg("expectation"))
        .def("__repr__", [](const PyRun& r) {
            return fmt::format("<Run {}: {} steps, {} requests, {} guest events, {} findings>", r.run().dir.string(), r.run().steps.size(),
                               r.run().requests.size(), r.run().guest.events.size(), r.run().findings.size());
        });

    m.def("load_run", [](const std::filesystem::path& path, bool allow_truncated_trace) {
        model::LoadOptions o;
        o.allow_truncated_trace = allow_truncated_trace;
        py::gil_scoped_release unlocked;  // loading a large run takes a while; other threads may go on
        return PyRun(model::load_run(path, o));
    }, py::arg("path"), py::arg("allow_truncated_trace") = false, "Load a run folder; raises RunError naming the file that is missing or wrong.");
    m.def("check", &run_check, py::arg("run"), py::arg("expectation"),
          "Check one expectation (the keys of an [[expect]] table); unknown keys, steps or files raise ValueError.");
}
