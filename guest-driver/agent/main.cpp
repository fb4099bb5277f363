// blkrig-agent: PID 1 of the guest. It does what /etc/blkrig/run.json says
// and reports on virtio-serial ports (docs/agent-protocol.md). Every way out
// ends in power-off, with the reason on the console and, once the results
// port is open, in an error record.
#include "before_steps.hpp"
#include "port.hpp"
#include "process.hpp"
#include "readback.hpp"
#include "report.hpp"
#include "setup.hpp"
#include "step_runner.hpp"
#include "tracing.hpp"

#include <signal.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace blkrig::agent;
using std::chrono::milliseconds;
using std::chrono::seconds;

const char* const kRunSpecPath = "/etc/blkrig/run.json";
constexpr milliseconds kDeviceWait{10'000};
constexpr seconds kSyncLimit{10};

// Setup, the steps and the trace copy together may take this long before
// the watchdog ends the run.
seconds watchdog_budget(const RunSpec& spec) {
    return seconds(60 + static_cast<int64_t>(spec.steps.size()) * (spec.step_timeout_s + 5) + 120);
}

Hello make_hello(const std::vector<std::string>& modules, std::vector<std::pair<std::string, std::string>> queue,
                 const TracingSetup& tracing, const std::string& disk) {
    Hello h;
    h.kernel = kernel_release();
    h.modules = modules;
    h.queue = std::move(queue);
    h.sysfs = read_disk_sysfs(disk);
    h.cpus_online = cpus_online();
    h.functions_traced = tracing.functions_traced;
    h.functions_missing = tracing.functions_missing;
    h.filter_lines = tracing.filter_lines;
    h.filter_hint = tracing.filter_hint;
    h.events = tracing.events;
    h.events_missing = tracing.events_missing;
    h.t_ns = monotonic_ns();
    return h;
}

// Unwritten data must not be lost, but a device that stopped answering must
// not keep the guest up.
void sync_bounded(Reporter& rep) {
    if (!run_bounded([] { ::sync(); return 0; }, kSyncLimit))
        rep.fatal("sync did not finish within " + std::to_string(kSyncLimit.count()) + " s; powering off anyway");
}

[[noreturn]] void power_off() {
    ::reboot(RB_POWER_OFF);
    // Still here: PID 1 exiting makes the kernel panic, and panic=-1 with
    // QEMU's -no-reboot ends the VM as well.
    say_error("reboot(RB_POWER_OFF) failed");
    ::_exit(1);
}

void run(Reporter& rep) {
    mount_filesystems(rep);
    const std::vector<std::string> modules = load_modules(rep);
    Ports ports = open_ports(kDeviceWait);
    rep.attach(std::move(ports.results));
    if (!ports.events.valid()) rep.note(std::string("no ") + kEventsPort + " port: the guest trace will not be sent");
    const RunSpec spec = read_run_spec(kRunSpecPath);
    start_watchdog(watchdog_budget(spec));

    // The rig's own set-up (queue knobs, the empty-cache proof, tracing)
    // waits on RCU grace periods again and again: a tracing clock, buffer or
    // tracer change, an elevator switch. Expedited grace periods make those
    // waits short; the kernel's own setting is back before the first step.
    ExpeditedRcu fast_setup;
    const UniqueFd disk = wait_for_disk(spec.disk, kDeviceWait);
    auto queue = set_queue_knobs(spec, rep);
    // Before tracing starts, so the guest's trace, like the steps, begins
    // on an empty cache of the disk.
    BeforeSteps before = prepare_disk(spec, disk.get());
    const TracingSetup tracing = start_tracing(spec.trace, rep);
    rep.hello(make_hello(modules, std::move(queue), tracing, spec.disk));
    before.rcu_expedited_after = fast_setup.restore();
    before.rcu_expedited_before = fast_setup.before();
    rep.before_steps(before);

    const size_t reported = StepRunner(spec, disk.get(), rep).run_all();

    stop_tracing(rep);
    copy_trace(ports.events, rep);
    rep.done(reported);
}

}  // namespace

int main() {
    // A step's child may die while PID 1 writes to its socket.
    ::signal(SIGPIPE, SIG_IGN);
    Reporter rep;
    try {
        run(rep);
    } catch (const std::exception& e) {
        rep.fatal(e.what());
    } catch (...) {
        rep.fatal("unknown exception");
    }
    sync_bounded(rep);
    power_off();
}
