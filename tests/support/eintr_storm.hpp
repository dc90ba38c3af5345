// SPDX-License-Identifier: MIT
//
// tests/support/eintr_storm.hpp: a SIGALRM every 200 µs, handled without
// SA_RESTART, so every blocking system call the test's thread makes is
// interrupted again and again (EINTR). For the tests that check each
// blocking call retries and keeps its contract under it.

#ifndef FORKSAFE_TESTS_SUPPORT_EINTR_STORM_HPP
#define FORKSAFE_TESTS_SUPPORT_EINTR_STORM_HPP

#include "fork_harness.hpp" // scoped_signal

#include <atomic>  // the tick counter, bumped by the handler
#include <csignal> // SIGALRM, sigaction

#include <sys/time.h> // setitimer

#include <doctest/doctest.h>

namespace forksafe_test {

namespace detail {
inline std::atomic<long> storm_ticks{0};
} // namespace detail

/// Arms a 200 µs SIGALRM timer for its lifetime; the handler counts and
/// returns. No SA_RESTART, so interrupted calls fail with EINTR. On
/// destruction the timer stops, then SIGALRM's old disposition is restored.
/// One at a time (one timer, one counter, which each storm starts at 0).
struct eintr_storm {
  scoped_signal on_alarm{SIGALRM, [] {
                           struct sigaction a {};
                           a.sa_handler = [](int) { detail::storm_ticks.fetch_add(1, std::memory_order_relaxed); };
                           sigemptyset(&a.sa_mask);
                           a.sa_flags = 0;
                           return a;
                         }()};
  eintr_storm() {
    detail::storm_ticks = 0;
    const itimerval every{{0, 200}, {0, 200}};
    REQUIRE(::setitimer(ITIMER_REAL, &every, nullptr) == 0);
  }
  ~eintr_storm() {
    const itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
  }
  eintr_storm(const eintr_storm&) = delete; // one timer
  eintr_storm& operator=(const eintr_storm&) = delete;

  /// SIGALRMs handled since the last storm began (also once it ended).
  [[nodiscard]] static long ticks() noexcept { return detail::storm_ticks.load(); }
};

} // namespace forksafe_test

#endif // FORKSAFE_TESTS_SUPPORT_EINTR_STORM_HPP
