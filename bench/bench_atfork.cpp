// SPDX-License-Identifier: MIT
//
// atfork_registry: what registered handlers add to fork(). Bare fork is
// _Fork() (no atfork handlers at all); the others are fork() with 0, 10 and
// 1,000 no-op entries in the registry. Samples are taken in interleaved
// rounds so drift hits every configuration alike.
// Target: 1,000 handlers add at most 10% to a bare fork.

#include <forksafe/atfork_registry.hpp>

#include "bench.hpp"
#include "fork_latency.hpp"

#include <cstdio> // std::printf
#include <vector> // handles, samples

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);
  const std::size_t rounds = bench::size(smoke, 40, 2);
  const std::size_t per_round = bench::size(smoke, 50, 5);
  const std::size_t handler_counts[] = {0, 10, 1000};

  std::vector<double> bare;
  std::vector<std::vector<double>> with(3);
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < per_round; ++i) bare.push_back(bench::time_ns([] { bench::fork_and_reap(bench::bare_fork); }));
    for (std::size_t c = 0; c < 3; ++c) {
      std::vector<forksafe::atfork_handle> handles;
      for (std::size_t h = 0; h < handler_counts[c]; ++h) {
        handles.push_back(forksafe::atfork_registry::instance().add([] {}, [] {}, [] {}));
      }
      for (std::size_t i = 0; i < per_round; ++i) {
        with[c].push_back(bench::time_ns([] { bench::fork_and_reap(bench::plain_fork); }));
      }
    }
  }
  bench::title("atfork_registry: fork + _exit + waitpid latency (µs)");
  const auto anchor = bench::summarize(bare);
  bench::row("bare fork (_Fork, no handlers)", anchor, "us", 1e3);
  const char* names[] = {"fork(), registry with 0 handlers", "fork(), registry with 10 handlers",
                         "fork(), registry with 1,000 handlers"};
  std::vector<bench::stats> s;
  for (std::size_t c = 0; c < 3; ++c) {
    s.push_back(bench::summarize(with[c]));
    bench::row(names[c], s.back(), "us", 1e3, &anchor);
  }
  // What the handlers themselves add, over what the registry costs empty
  // (its lock, and glibc's fork() over _Fork()), relative to a bare fork.
  const double added = (s[2].median - s[0].median) / anchor.median;
  std::printf("  1,000 handlers add %.1f%% to a bare fork (%.1f ns per handler) [target <= 10%%]\n", added * 100,
              (s[2].median - s[0].median) / 1000);
  std::printf("  the empty registry adds %.1f%% (glibc's fork() itself is ~3%% over _Fork())\n",
              (s[0].median / anchor.median - 1) * 100);
  return 0;
}
