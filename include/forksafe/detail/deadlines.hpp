// SPDX-License-Identifier: MIT
//
// forksafe/detail/deadlines.hpp: steady-clock time as a number, and a
// deadline a duration after a time point that neither overflows nor wraps.

#ifndef FORKSAFE_DETAIL_DEADLINES_HPP
#define FORKSAFE_DETAIL_DEADLINES_HPP

#include "config.hpp"

#include <chrono>  // steady_clock
#include <cstdint> // nanosecond counts
#include <ctime>   // timespec

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// steady_clock now, in nanoseconds since its epoch.
inline std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// steady_clock::now() + d, saturating at time_point::max(); d <= 0: now.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::steady_clock::time_point start,
                                                     std::chrono::duration<Rep, Period> d) {
  using clock = std::chrono::steady_clock;
  if (d <= d.zero()) return start;
  const auto room = clock::time_point::max() - start;
  // Compared in long double, so a huge d (hours::max()) cannot overflow.
  if (std::chrono::duration<long double>(d) >= std::chrono::duration<long double>(room)) {
    return clock::time_point::max();
  }
  return start + std::chrono::ceil<clock::duration>(d);
}

/// A relative timespec for a non-negative duration.
inline timespec to_timespec(std::chrono::nanoseconds d) noexcept {
  if (d.count() < 0) d = std::chrono::nanoseconds(0);
  return timespec{static_cast<time_t>(d.count() / 1'000'000'000), static_cast<long>(d.count() % 1'000'000'000)};
}

/// The duration a relative timespec stands for.
inline std::chrono::nanoseconds to_duration(const timespec& ts) noexcept {
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// A steady_clock time point as an absolute CLOCK_MONOTONIC timespec (what
/// steady_clock reads on Linux); before the epoch: 0.
inline timespec monotonic_timespec(std::chrono::steady_clock::time_point t) noexcept {
  return to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()));
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_DEADLINES_HPP
