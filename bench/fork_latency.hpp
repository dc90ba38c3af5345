// SPDX-License-Identifier: MIT
//
// bench/fork_latency.hpp: fork() + _exit(0) in the child + waitpid in the
// parent, timed, against the same with _Fork() (glibc 2.34+), which runs no
// atfork handlers at all: the bare fork every handler cost is measured from.

#ifndef FORKSAFE_BENCH_FORK_LATENCY_HPP
#define FORKSAFE_BENCH_FORK_LATENCY_HPP

#include "bench.hpp"

#include <functional> // set-up callbacks
#include <memory>     // what a set-up keeps alive
#include <string>     // row names
#include <vector>     // configurations, samples

#include <sys/wait.h> // waitpid
#include <unistd.h>   // fork, _Fork, _exit

namespace bench {

inline void fork_and_reap(pid_t (*fork_fn)()) {
  const pid_t pid = fork_fn();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

inline pid_t plain_fork() { return ::fork(); }
inline pid_t bare_fork() { return ::_Fork(); }

/// A fork() configuration: `setup` creates what must be live while its
/// forks are timed (handlers, mutexes) and returns it; dropping it tears down.
struct fork_config {
  std::string name;
  std::function<std::shared_ptr<void>()> setup;
};

/// Times fork() under each configuration against bare _Fork(), in
/// interleaved rounds so drift hits every configuration alike; prints a
/// table and returns the stats (anchor first).
inline std::vector<stats> fork_latency_table(const char* heading, const std::vector<fork_config>& configs,
                                             bool smoke_run) {
  const std::size_t rounds = size(smoke_run, 40, 2);
  const std::size_t per_round = size(smoke_run, 40, 3);
  std::vector<std::vector<double>> samples(configs.size() + 1);
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < per_round; ++i) samples[0].push_back(time_ns([] { fork_and_reap(bare_fork); }));
    for (std::size_t c = 0; c < configs.size(); ++c) {
      const std::shared_ptr<void> live = configs[c].setup();
      for (std::size_t i = 0; i < per_round; ++i) {
        samples[c + 1].push_back(time_ns([] { fork_and_reap(plain_fork); }));
      }
    }
  }
  title(heading);
  std::vector<stats> out;
  for (auto& s : samples) out.push_back(summarize(std::move(s)));
  row("bare fork (_Fork, no handlers)", out[0], "us", 1e3);
  for (std::size_t c = 0; c < configs.size(); ++c) row(configs[c].name, out[c + 1], "us", 1e3, &out[0]);
  return out;
}

} // namespace bench

#endif // FORKSAFE_BENCH_FORK_LATENCY_HPP
