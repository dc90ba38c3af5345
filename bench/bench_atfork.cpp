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
#include <memory> // what a configuration keeps alive
#include <vector> // handles

namespace {
// Registers `n` no-op entries for as long as the returned object lives.
std::shared_ptr<void> no_op_handlers(std::size_t n) {
  auto handles = std::make_shared<std::vector<forksafe::atfork_handle>>();
  for (std::size_t i = 0; i < n; ++i)
    handles->push_back(forksafe::atfork_registry::instance().add([] {}, [] {}, [] {}));
  return handles;
}
} // namespace

int main(int argc, char** argv) {
  const auto s =
      bench::fork_latency_table("atfork_registry: fork + _exit + waitpid latency (µs)",
                                {{"fork(), registry with 0 handlers", [] { return no_op_handlers(0); }},
                                 {"fork(), registry with 10 handlers", [] { return no_op_handlers(10); }},
                                 {"fork(), registry with 1,000 handlers", [] { return no_op_handlers(1000); }}},
                                bench::smoke(argc, argv));
  // What the handlers themselves add, over what the registry costs empty
  // (its lock, and glibc's fork() over _Fork()), relative to a bare fork.
  const double added = (s[3].median - s[1].median) / s[0].median;
  std::printf("  1,000 handlers add %.1f%% to a bare fork (%.1f ns per handler) [target <= 10%%]\n", added * 100,
              (s[3].median - s[1].median) / 1000);
  std::printf("  the empty registry adds %.1f%% (glibc's fork() itself is ~3%% over _Fork())\n",
              (s[1].median / s[0].median - 1) * 100);
  return 0;
}
