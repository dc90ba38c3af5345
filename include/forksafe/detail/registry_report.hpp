// SPDX-License-Identifier: MIT
//
// forksafe/detail/registry_report.hpp: what one fork's preparation looked
// like (who refused, how often, for how long) and the one line that says so.

#ifndef FORKSAFE_DETAIL_REGISTRY_REPORT_HPP
#define FORKSAFE_DETAIL_REGISTRY_REPORT_HPP

#include "config.hpp"
#include "registry_entry.hpp"

#include <algorithm> // std::min
#include <cstdarg>   // std::va_list
#include <cstddef>   // std::size_t
#include <cstdint>   // nanosecond counts
#include <cstdio>    // std::vsnprintf

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// One entry that held a fork back: for reports.
struct blocker_stat {
  const registry_entry* entry;
  std::uint32_t refusals;
  std::int64_t held_back_ns; ///< time spent blocked on it or backing off after it refused
  char name[64];             // NOLINT(modernize-avoid-c-arrays): a hub record, plain data
  char detail[96];           // NOLINT(modernize-avoid-c-arrays)
};

/// What one fork's preparation looked like: filled by the forking thread.
struct fork_stats {
  static constexpr unsigned max_blockers = 4;
  std::int64_t started_ns;
  std::int64_t waited_ns;
  std::uint32_t passes;
  std::uint32_t blocker_count;
  std::uint32_t unprepared_count; ///< entries a timed-out fork went on without
  bool gave_up;
  bool ahead; ///< prepared for forksafe's own fork (prepare_ahead), which fails instead of going on
  blocker_stat blockers[max_blockers]; // NOLINT(modernize-avoid-c-arrays): a hub record, plain data
  char unprepared[max_blockers][64];   // NOLINT(modernize-avoid-c-arrays)
};

/// The slow-fork callback, as the registry keeps it (the public side wraps a
/// std::function in it).
using slow_fork_fn = void (*)(const fork_stats&, void* context) noexcept;

/// Text appended to a fixed buffer, cut at its end.
struct line_buffer {
  char* out;
  std::size_t capacity;
  std::size_t n = 0;

#if defined(__GNUC__) || defined(__clang__)
  __attribute__((format(printf, 2, 3)))
#endif
  void
  put(const char* fmt, ...) noexcept {
    if (n + 1 >= capacity) return;
    std::va_list args;
    va_start(args, fmt);
    const int k = std::vsnprintf(out + n, capacity - n, fmt, args);
    va_end(args);
    if (k > 0) n = std::min(n + static_cast<std::size_t>(k), capacity - 1);
  }
};

/// "; held back by 'x' refused N times, held it back M ms: detail; ..."
inline void format_blockers(const fork_stats& s, line_buffer& b) noexcept {
  for (std::uint32_t i = 0; i < s.blocker_count; ++i) {
    const blocker_stat& k = s.blockers[i];
    b.put("%s '%s' refused %u time%s, held it back %lld ms%s%s", i == 0 ? "; held back by" : ";", k.name,
          static_cast<unsigned>(k.refusals), k.refusals == 1 ? "" : "s",
          static_cast<long long>(k.held_back_ns / 1'000'000), k.detail[0] != '\0' ? ": " : "", k.detail);
  }
}

/// What held back a forksafe fork that gave up: "the fork could not be
/// prepared within N ms; held back by ...".
inline void format_unprepared(const fork_stats& s, char* out, std::size_t capacity) noexcept {
  line_buffer b{out, capacity};
  out[0] = '\0';
  b.put("the fork could not be prepared within %lld ms", static_cast<long long>(s.waited_ns / 1'000'000));
  format_blockers(s, b);
}

/// One line, starting with "forksafe:" and ending with a newline, for stderr.
inline void format_report(const fork_stats& s, char* out, std::size_t capacity) noexcept {
  line_buffer b{out, capacity - 1}; // room for the newline
  out[0] = '\0';
  const auto ms = static_cast<long long>(s.waited_ns / 1'000'000);
  const char* what = s.ahead ? "a forksafe fork" : "fork()";
  if (!s.gave_up) {
    b.put("forksafe: %s waited %lld ms to prepare", what, ms);
  } else if (s.ahead) {
    b.put("forksafe: %s could not be prepared within %lld ms and was not made", what, ms);
  } else {
    b.put("forksafe: %s could not be prepared within %lld ms and went on without", what, ms);
    for (std::uint32_t i = 0; i < s.unprepared_count; ++i) b.put("%s '%s'", i == 0 ? "" : ",", s.unprepared[i]);
    b.put(" (in the child, quiesce locks it could not take are poisoned)");
  }
  format_blockers(s, b);
  out[b.n] = '\n';
  out[b.n + 1] = '\0';
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_REGISTRY_REPORT_HPP
