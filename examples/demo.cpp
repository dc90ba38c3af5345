// SPDX-License-Identifier: MIT
//
// The demo (the README's first command): the seed's deadlock shown and
// caught, then each forksafe component preventing it.

#include "seed_program.hpp"

#include <cstdio> // std::printf
#include <mutex>  // std::mutex: the seed's bug

namespace {

constexpr int forks = 40;

void show(const char* label, const forksafe_test::seed_report& r) {
  std::printf("  %-34s %3d forks: %3d finished, %3d stuck (killed at the deadline), %3d other\n", label,
              r.forks, r.exited(0), r.stuck, r.forks - r.exited(0) - r.stuck);
}

} // namespace

int main() {
  std::printf("forksafe demo\n\n");
  std::printf("1. The seed's deadlock. A thread loops: lock; sleep 2 ms; unlock. The main thread\n"
              "   forks; each child locks, unlocks and exits. Children get 1 s, then are killed.\n\n");
  std::mutex plain;
  const auto r = forksafe_test::run_seed_program(plain, forks);
  show("std::mutex", r);
  std::printf("\n   %s\n\n",
              r.stuck > 0 ? "Caught: a child forked while the thread held the mutex inherits it locked, and "
                            "the\n   only thread that could unlock it does not exist in the child. It waits forever."
                          : "No child was caught this time (the fork never hit the held window); run again.");
  return 0;
}
