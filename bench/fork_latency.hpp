// SPDX-License-Identifier: MIT
//
// bench/fork_latency.hpp: fork() + _exit(0) in the child + waitpid in the
// parent, timed, against the same with _Fork() (glibc 2.34+), which runs no
// atfork handlers at all: the bare fork every handler cost is measured from.

#ifndef FORKSAFE_BENCH_FORK_LATENCY_HPP
#define FORKSAFE_BENCH_FORK_LATENCY_HPP

#include "bench.hpp"

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

} // namespace bench

#endif // FORKSAFE_BENCH_FORK_LATENCY_HPP
