// SPDX-License-Identifier: MIT
//
// forksafe/detail/result_source.hpp: what a process_result waits on and
// reads its outcome from. Two kinds: fork_call's own child
// (detail/forked_source.hpp) and a process_pool task (detail/pool_core.hpp).
// Either fills in the same outcome, so the handle decodes it the same way.

#ifndef FORKSAFE_DETAIL_RESULT_SOURCE_HPP
#define FORKSAFE_DETAIL_RESULT_SOURCE_HPP

#include "../child_error.hpp"
#include "child_process.hpp"
#include "config.hpp"
#include "result_frame.hpp"
#include "shared_region.hpp"
#include "unique_fd.hpp"
#include "wire.hpp"

#include <array>    // the frame
#include <chrono>   // deadlines, durations
#include <csignal>  // SIGKILL
#include <cstddef>  // std::size_t
#include <optional> // an outcome known before any child ran

#include <sys/types.h> // pid_t

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// The interface, and the outcome it fills in before wait() returns true.
class result_source {
public:
  // User-provided, so std::make_shared does not zero the frame first: only
  // the bytes a child writes are ever read.
  result_source() noexcept {}                   // NOLINT(modernize-use-equals-default)
  result_source(const result_source&) = delete; // one outcome, one owner of its process
  result_source& operator=(const result_source&) = delete;
  virtual ~result_source() = default;

  /// Waits until the outcome is known or `until` passes; true if known.
  /// Throws std::system_error if waiting failed.
  virtual bool wait(std::chrono::steady_clock::time_point until) = 0;
  /// The process that runs or ran it (a pool task: its worker; -1 while queued
  /// or when none was made).
  [[nodiscard]] virtual pid_t pid() const noexcept = 0;
  /// A descriptor that turns readable once the outcome is known.
  virtual int native_handle() = 0;
  /// Signals the process running it, while it runs.
  virtual void kill(int sig) noexcept = 0;
  /// When a timeout will end it (time_point::max(): none the caller must watch).
  [[nodiscard]] virtual std::chrono::steady_clock::time_point deadline() const noexcept {
    return std::chrono::steady_clock::time_point::max();
  }

  // ---- the outcome -----------------------------------------------------------
  alignas(wire_alignment) std::array<
      unsigned char, frame_capacity + 1> frame; ///< frame_size bytes are meaningful (+1: an oversized frame shows)
  std::size_t frame_size = 0;                   ///< 0: no frame arrived; see status
  child_status status{};
  bool killed_for_timeout = false;           ///< forksafe killed it: its timeout passed
  std::chrono::nanoseconds ran_for{-1};      ///< killed_for_timeout: how long it ran
  std::chrono::nanoseconds prepare_time{-1}; ///< how long its fork waited to be prepared (fork_call)
  bool cancelled = false;                    ///< never ran (a pool task still queued at shutdown)
  std::optional<child_error> not_started;    ///< no child was made (its fork could not be prepared in time)
  shared_region region;                      ///< a large result, built here
  unique_fd value_fd;                        ///< a large wire form arrives in this memfd
  captured_output output;                    ///< what the child wrote (fork_options::capture_output)
};

/// The child_error for a child that delivered no frame and ended as `status`.
/// `killed_for_timeout`: forksafe killed it because its timeout passed,
/// after it ran for `ran_for`, its fork having waited `prepare_time` to be
/// prepared (negative: unknown).
inline child_error error_from_status(pid_t pid, const child_status& status, bool killed_for_timeout,
                                     std::chrono::nanoseconds ran_for = std::chrono::nanoseconds(-1),
                                     std::chrono::nanoseconds prepare_time = std::chrono::nanoseconds(-1)) {
  using kind = child_status::kind;
  child_error::details d;
  d.pid = pid;
  d.value = status.value;
  if (killed_for_timeout) {
    d.ran_for = ran_for;
    d.prepare_time = prepare_time;
  }
  switch (status.how) {
  case kind::exited: d.why = child_error::reason::exited; break;
  case kind::signaled:
    d.why =
        killed_for_timeout && status.value == SIGKILL ? child_error::reason::timed_out : child_error::reason::signaled;
    break;
  case kind::timed_out: d.why = child_error::reason::timed_out; break;
  case kind::lost:
  case kind::running:
    // Reaped elsewhere: how it ended is unknown, unless forksafe killed it.
    d.why = killed_for_timeout ? child_error::reason::timed_out : child_error::reason::lost;
    d.value = killed_for_timeout ? SIGKILL : 0;
    break;
  }
  return child_error(std::move(d));
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_RESULT_SOURCE_HPP
