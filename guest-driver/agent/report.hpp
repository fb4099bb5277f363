// Everything the agent says: result records on the results port, a line
// per event on the console for people.
//
// Problems that do not stop the run (a queue knob the kernel refused, a
// module that would not load) are `error` records; those found before hello
// wait and follow it, so hello is always the first line of a run.
#pragma once

#include "port.hpp"
#include "agent_core/result.hpp"

#include <string>
#include <vector>

namespace blkrig::agent {

class Reporter {
public:
    void attach(Port results) { port_ = std::move(results); }
    bool attached() const { return port_.valid(); }

    void note(const std::string& what);
    void hello(const Hello& h);
    void before_steps(const BeforeSteps& b);
    void step(const StepResult& r, const Step& s);
    void done(size_t steps);
    // Says why the run ends, wherever it still can; never throws.
    void fatal(const std::string& what) noexcept;

private:
    void send(const std::string& line);

    Port port_;
    bool hello_sent_ = false;
    std::vector<std::string> pending_;
};

}  // namespace blkrig::agent
