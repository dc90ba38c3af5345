// SPDX-License-Identifier: MIT
//
// tests/support/fork_while_locked.hpp: the fork-while-locked program (one thread
// forks while another holds a mutex), in C++, over any mutex type. Used by
// the tests and by the demo, so both show the same scenario.
//
// A thread loops: lock; sleep `hold`; unlock; sleep `gap`. The main thread
// forks `forks` children, a short random pause apart; each child runs
// `child_body` (by default: lock, unlock, exit 0). Every child gets one
// common deadline after the last fork; those still running then are killed
// and counted as stuck.

#ifndef FORKSAFE_TESTS_SUPPORT_FORK_WHILE_LOCKED_HPP
#define FORKSAFE_TESTS_SUPPORT_FORK_WHILE_LOCKED_HPP

#include <forksafe/detail/child_process.hpp>

#include <array>        // exit-code histogram
#include <atomic>       // stop flag
#include <chrono>       // hold, gap, deadline
#include <random>       // fork phase
#include <system_error> // fork_poisoned's base
#include <thread>       // the lock-holding thread
#include <vector>       // children in flight

namespace forksafe_test {

struct fork_while_locked_report {
  int forks = 0;
  int stuck = 0;                     ///< still running at the deadline: killed
  int signaled = 0;                  ///< died of a signal
  int lost = 0;                      ///< reaped by somebody else
  std::array<int, 256> exit_codes{}; ///< how many children exited with each code
  [[nodiscard]] int exited(int code) const { return exit_codes[static_cast<std::size_t>(code)]; }
};

template <class Mutex, class ChildBody>
fork_while_locked_report run_fork_while_locked(Mutex& m, int forks, ChildBody child_body,
                                               std::chrono::milliseconds deadline = std::chrono::milliseconds(1000),
                                               std::chrono::microseconds hold = std::chrono::microseconds(2000),
                                               std::chrono::microseconds gap = std::chrono::microseconds(50)) {
  using forksafe::detail::child_process;
  using forksafe::detail::child_status;
  std::atomic<bool> stop{false};
  std::thread holder([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      m.lock();
      std::this_thread::sleep_for(hold);
      m.unlock();
      std::this_thread::sleep_for(gap);
    }
  });
  std::vector<child_process> children;
  children.reserve(static_cast<std::size_t>(forks));
  std::minstd_rand rng(12345);
  std::uniform_int_distribution<int> pause_us(0, 500);
  for (int i = 0; i < forks; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    children.push_back(child_process::spawn(child_body));
  }
  stop.store(true);
  holder.join();

  fork_while_locked_report report;
  report.forks = forks;
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (child_process& c : children) {
    child_status s = c.wait_until(until);
    if (!s.ended()) s = c.kill_and_reap();
    switch (s.how) {
    case child_status::kind::exited: ++report.exit_codes[static_cast<std::size_t>(s.value & 0xff)]; break;
    case child_status::kind::signaled: ++report.signaled; break;
    case child_status::kind::timed_out: ++report.stuck; break;
    case child_status::kind::lost: ++report.lost; break;
    case child_status::kind::running: break;
    }
  }
  return report;
}

/// A child for poison-policy mutexes: exits 0 after lock and unlock, or
/// `poisoned_code` if lock() threw fork_poisoned.
template <class Mutex>
auto lock_or_report_poison(Mutex& m, int poisoned_code = 3) {
  return [&m, poisoned_code] {
    try {
      m.lock();
    } catch (const std::system_error&) { // fork_poisoned; this header does not depend on forksafe's mutexes
      return poisoned_code;
    }
    m.unlock();
    return 0;
  };
}

/// The fork-while-locked program's child: lock, unlock, exit 0.
template <class Mutex>
fork_while_locked_report run_fork_while_locked(Mutex& m, int forks,
                                               std::chrono::milliseconds deadline = std::chrono::milliseconds(1000)) {
  return run_fork_while_locked(
      m, forks,
      [&m] {
        m.lock();
        m.unlock();
        return 0;
      },
      deadline);
}

} // namespace forksafe_test

#endif // FORKSAFE_TESTS_SUPPORT_FORK_WHILE_LOCKED_HPP
