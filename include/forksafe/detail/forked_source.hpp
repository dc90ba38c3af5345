// SPDX-License-Identifier: MIT
//
// forksafe/detail/forked_source.hpp: fork_call's result source: a child
// forked for one call, the pipe its frame comes back through, and the shared
// mapping a large result is built in.
//
// The parent waits on the child's pidfd (Linux 5.3+), which turns readable
// when the child ends, and reads the pipe then: nothing waits for EOF, so a
// copy of the write end that another call's child (or this child's own
// child) inherited cannot delay a result. The frame is written before the
// child exits, so success never depends on waitpid(): with SIGCHLD ignored,
// or a handler that reaps every child with waitpid(-1), the value still
// arrives, and a child that ended without a frame is reported as lost, not
// waited for. Without a pidfd, it polls waitid() with a bounded backoff and
// also wakes when the frame arrives.

#ifndef FORKSAFE_DETAIL_FORKED_SOURCE_HPP
#define FORKSAFE_DETAIL_FORKED_SOURCE_HPP

#include "../child_error.hpp"
#include "child_process.hpp"
#include "config.hpp"
#include "deadlines.hpp"
#include "output_capture.hpp"
#include "result_frame.hpp"
#include "result_source.hpp"
#include "shared_region.hpp"
#include "system_errors.hpp"
#include "unique_fd.hpp"

#include <algorithm>   // std::min
#include <array>       // the pipe's two descriptors
#include <cerrno>      // errno
#include <chrono>      // deadlines
#include <csignal>     // SIGKILL
#include <cstddef>     // std::size_t
#include <optional>    // the timeout
#include <type_traits> // std::is_void_v

#include <fcntl.h>  // O_CLOEXEC, O_NONBLOCK
#include <unistd.h> // pipe2

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// fork_call's child's store for a large wire form: the memfd its parent
/// made before the fork.
struct child_value_store {
  static constexpr bool ends_process = true;
  int fd = -1;
  value_memfd_writer writer;
  unsigned char* reserve(std::size_t bytes) { return writer.map(fd, bytes); }
  void commit() noexcept { writer.seal(); }
};

/// Makes the result pipe, both ends close-on-exec and non-blocking. Throws
/// std::system_error with errno (EMFILE, ENFILE) and then holds nothing.
inline void make_result_pipe(unique_fd& read_end, unique_fd& write_end) {
  std::array<int, 2> fds{};
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
  if (::pipe2(fds.data(), O_CLOEXEC | O_NONBLOCK) != 0) {
    throw_errno(errno, "forksafe: fork_call could not create its result pipe (pipe2)");
  }
#else
  // No pipe2: another thread's exec() may inherit these between the calls.
  if (::pipe(fds.data()) != 0) throw_errno(errno, "forksafe: fork_call could not create its result pipe (pipe)");
  for (int fd : fds) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
#endif
  read_end = unique_fd(fds[0]);
  write_end = unique_fd(fds[1]);
}

/// How fork_call's child is started: fork_options, as the source needs them.
struct fork_settings {
  std::optional<std::chrono::nanoseconds> timeout{};
  bool own_process_group = false;
  bool capture_output = false;
  std::size_t capture_limit = 0;
  bool reset_signal_handlers = false;
};

class forked_source final : public result_source {
public:
  forked_source() noexcept {} // NOLINT(modernize-use-equals-default): see result_source

  /// Forks; the child runs `call` and delivers a T. `settings.timeout`
  /// bounds the whole call, the fork's preparation included: if that runs
  /// out first, nothing is forked and not_started says why. Throws
  /// std::system_error (the pipes, the mapping, fork itself).
  template <class T, class Call>
  void start(Call& call, const fork_settings& settings) {
    expected_ = frame_expectation::of<T>();
    unique_fd read_end;
    unique_fd write_end;
    make_result_pipe(read_end, write_end);
    if (settings.capture_output) capture_.open(settings.capture_limit);
    if constexpr (stored_in_region<T>()) region = shared_region(sizeof(T));
    if constexpr (needs_wire_form<T>) value_fd = make_value_memfd("forksafe::fork_call");
    const int value_memfd = value_fd.get();
    const auto started = std::chrono::steady_clock::now();
    void* const data = region.data();
    const std::size_t data_size = region.size();
    const int fd = write_end.get();
    spawn_options spawn;
    spawn.own_process_group = settings.own_process_group;
    spawn.default_all_handlers = settings.reset_signal_handlers;
    spawn.stdout_to = capture_.child_stdout();
    spawn.stderr_to = capture_.child_stderr();
    deadline_ =
        settings.timeout ? deadline_after(started, *settings.timeout) : std::chrono::steady_clock::time_point::max();
    spawn.prepare_deadline = deadline_;
    const auto in_child = [&call, data, data_size, fd, value_memfd]() noexcept {
      child_value_store store{value_memfd, {}};
      return run_call<T>(call, data, data_size, store, fd);
    };
    try {
      child_ = child_process::spawn(in_child, spawn);
    } catch (const fork_unprepared& e) {
      region.reset();
      value_fd.reset();
      capture_ = output_capture();
      child_error::details d;
      d.why = child_error::reason::prepare_timed_out;
      d.blocker = unprepared_reason(e.stats());
      not_started.emplace(std::move(d));
      done_ = true;
      return;
    }
    forked_at_ = std::chrono::steady_clock::now();
    prepare_time = child_.prepare_time();
    write_end.reset(); // only the child writes
    capture_.forked();
    region.keep_out_of_later_forks();
    result_fd_ = std::move(read_end);
  }

  bool wait(std::chrono::steady_clock::time_point until) override {
    while (!done_) {
      const bool no_pidfd = child_.native_handle() < 0;
      const int wake_fd = no_pidfd && !drained_ && !hung_up_ ? result_fd_.get() : -1;
      // The output pipes are watched only after the child's first moments
      // (output_capture::unwatched_start): a child that ends sooner hangs
      // them up as it exits, which would wake this wait once more.
      const auto watch_from = forked_at_ + output_capture::unwatched_start;
      const bool watch = capture_.active() && std::chrono::steady_clock::now() >= watch_from;
      const auto wake_at =
          capture_.active() && !watch ? std::min({until, deadline_, watch_from}) : std::min(until, deadline_);
      const child_status& s =
          child_.wait_until(wake_at, {wake_fd, watch ? capture_.stdout_fd() : -1, watch ? capture_.stderr_fd() : -1});
      capture_.drain();
      if (s.ended()) {
        finish(s);
        break;
      }
      if (no_pidfd && collect()) { // the frame came first; the child is in _exit
        (void)child_.poll();
        finish(child_.status());
        break;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline_) {
        killed_for_timeout = true;
        ran_for = now - forked_at_;
        finish(child_.kill_and_reap(SIGKILL));
        break;
      }
      if (now >= until) return false;
    }
    return true;
  }

  [[nodiscard]] pid_t pid() const noexcept override { return child_.pid(); }

  /// The child's pidfd or, where none could be opened, the read end of the
  /// result pipe; -1 when no child was made.
  int native_handle() override { return child_.native_handle() >= 0 ? child_.native_handle() : result_fd_.get(); }

  void kill(int sig) noexcept override {
    if (!done_) child_.kill(sig);
  }

  [[nodiscard]] std::chrono::steady_clock::time_point deadline() const noexcept override { return deadline_; }

private:
  // Reads the frame if it is there, once; true once a frame that checks out
  // arrived (one atomic write: all of it or nothing).
  bool collect() noexcept {
    if (!drained_ && result_fd_) {
      bool eof = false;
      const std::size_t n = read_available(result_fd_.get(), frame.data(), frame.size(), eof);
      hung_up_ = hung_up_ || eof;
      if (n != 0) {
        drained_ = true;
        frame_size = n;
      }
    }
    return frame_size != 0 && read_frame(frame.data(), frame_size, expected_).valid;
  }

  void finish(const child_status& s) noexcept {
    (void)collect();
    capture_.drain(); // the child was reaped: the pipes hold all it wrote
    output = capture_.take();
    status = s;
    done_ = true;
  }

  unique_fd result_fd_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point forked_at_{};
  frame_expectation expected_{};
  bool done_ = false;
  bool drained_ = false; // the frame (or garbage) was read: read no more
  bool hung_up_ = false; // every write end is closed
  output_capture capture_;
  child_process child_; // last: destroyed (killed and reaped) first
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_FORKED_SOURCE_HPP
