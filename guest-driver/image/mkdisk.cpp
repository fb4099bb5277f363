// blkrig-mkdisk SPEC.json --out IMG [--extents OUT.json]: builds a disk image
// from a spec and writes where each file's bytes landed. Exit codes: 0 built,
// 1 a tool failed or the layout could not be made, 2 bad arguments or spec.
#include "disk_image.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/temp_dir.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace {

namespace fs = std::filesystem;

// A run stopped while its disk is built sends SIGTERM to this process's
// group (then SIGKILL a second later): the scratch folder and the half-made
// image go with it. The signals are blocked everywhere and taken by a thread
// of their own, so the removal runs in an ordinary context, not a handler.
// The tools this runs get them unblocked (tool.cpp), and stop with us.
sigset_t stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (const int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
    return set;
}

// Called with the signals already blocked (before the scratch folder is
// made, so one that comes in between waits for this thread).
void stop_cleanly_on_signals(const fs::path& scratch, const fs::path& out) {
    std::thread([set = stop_signals(), scratch, out] {
        int sig = 0;
        sigwait(&set, &sig);
        std::error_code ec;
        fs::remove_all(scratch, ec);
        fs::remove(out, ec);
        ::_exit(128 + sig);
    }).detach();
}

}  // namespace

int main(int argc, char** argv) {
    using namespace blkrig::image;
    CLI::App app{"blkrig-mkdisk: build a disk image whose files have a controlled on-disk layout"};
    std::string spec_path, out, extents_path;
    app.add_option("spec", spec_path, "Spec (JSON): fs, size_bytes, files, ...")->required();
    app.add_option("--out", out, "The image to write (replaced)")->required();
    app.add_option("--extents", extents_path, "Write the layout report (JSON) here; '-' for stdout");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }

    std::ifstream in(spec_path);
    if (!in) {
        std::cerr << "blkrig-mkdisk: cannot read " << spec_path << "\n";
        return 2;
    }
    std::stringstream text;
    text << in.rdbuf();
    // Every scratch folder of the build is made inside this one (TMPDIR is
    // where TempDir makes them), so one removal takes them all.
    const sigset_t stop = stop_signals();
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    blkrig::TempDir scratch("blkrig-mkdisk-");
    ::setenv("TMPDIR", scratch.path().c_str(), 1);
    stop_cleanly_on_signals(scratch.path(), out);
    try {
        const DiskSpec spec = parse_spec_text(text.str());
        const ImageReport report = build_image(spec, out);
        if (!extents_path.empty()) {
            const std::string json = to_json(report).dump(2) + "\n";
            if (extents_path == "-") {
                std::cout << json;
            } else {
                std::ofstream o(extents_path);
                o << json;
                if (!o.flush()) {
                    std::cerr << "blkrig-mkdisk: cannot write " << extents_path << "\n";
                    return 1;
                }
            }
        }
        return 0;
    } catch (const SpecError& e) {
        std::cerr << "blkrig-mkdisk: bad spec: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "blkrig-mkdisk: " << e.what() << "\n";
        return 1;
    }
}
