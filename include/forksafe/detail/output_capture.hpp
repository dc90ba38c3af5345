// SPDX-License-Identifier: MIT
//
// forksafe/detail/output_capture.hpp: a fork_call child's stdout and stderr,
// each through a pipe the parent drains while it waits, keeping the tail.
//
// The child writes as it would to a terminal: its ends are blocking, so no
// write of its is lost. The parent drains whenever it waits for the child
// (get, wait, wait_for, ready), so a child writing 10 MiB never blocks for
// long; it keeps the last `limit` bytes of each stream and counts the rest.
// Nothing waits for end of file: once the child is reaped, the parent reads
// what the pipe holds (all the child wrote, since a pipe write is complete
// when it returns) and stops, so a grandchild holding a copy of the write
// end cannot delay the result.

#ifndef FORKSAFE_DETAIL_OUTPUT_CAPTURE_HPP
#define FORKSAFE_DETAIL_OUTPUT_CAPTURE_HPP

#include "../child_error.hpp"
#include "config.hpp"
#include "system_errors.hpp"
#include "unique_fd.hpp"

#include <array>   // the read buffer
#include <cerrno>  // errno, EINTR
#include <chrono>  // unwatched_start
#include <cstddef> // std::size_t
#include <cstdint> // std::uint64_t
#include <string>  // the tails

#include <fcntl.h>  // O_CLOEXEC, O_NONBLOCK, F_SETPIPE_SZ
#include <unistd.h> // pipe2, read

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// One captured stream: the parent's read end and the tail kept so far.
struct captured_stream {
  unique_fd read_end;
  unique_fd write_end; // the child's; closed in the parent once it forked
  std::string tail;
  std::uint64_t total = 0;
  bool hung_up = false; // every write end is closed: no need to poll it again

  void keep(const char* data, std::size_t n, std::size_t limit) {
    total += n;
    if (n >= limit) {
      tail.assign(data + (n - limit), limit);
      return;
    }
    tail.append(data, n);
    // Trimmed once it holds twice the limit: each byte is moved at most once.
    if (tail.size() > 2 * limit) tail.erase(0, tail.size() - limit);
  }
};

class output_capture {
public:
  /// The pipe capacity asked for (a hint: Linux grants up to
  /// /proc/sys/fs/pipe-max-size, 1 MiB by default), so a child can write that
  /// much while its parent is not waiting before it pauses.
  static constexpr int pipe_capacity = 1 << 20;

  /// For this long after the fork the parent waits for the child's end
  /// alone, then also for output to drain. A child that ends sooner (most
  /// that are judged by their output, such as a death test's) would
  /// otherwise wake the parent twice: once when its exit hangs the pipes up,
  /// once when it can be reaped, a wake-up that costs as much as a fifth of
  /// the fork. A child that writes more than a pipe holds in that time
  /// pauses for at most this long.
  static constexpr std::chrono::microseconds unwatched_start{1000};

  /// Makes the two pipes. Throws std::system_error with errno (EMFILE,
  /// ENFILE); then holds nothing.
  void open(std::size_t limit) {
    limit_ = limit;
    // The child calls dup2; with lazy binding (the default) a child calling
    // it first resolves it in its own copy of the PLT, a symbol lookup that
    // costs every child about ten page faults. Resolved here, once, for all.
    static const bool dup2_bound = (::dup2(-1, -1), true);
    (void)dup2_bound;
    for (captured_stream* s : {&out_, &err_}) {
      std::array<int, 2> fds{};
      if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
        const int err = errno;
        out_ = captured_stream();
        err_ = captured_stream();
        throw_errno(err, "forksafe: fork_call could not create a pipe to capture the child's output (pipe2)");
      }
      s->read_end = unique_fd(fds[0]);
      s->write_end = unique_fd(fds[1]);
      // Only the parent's end is non-blocking: the child's writes must not
      // fail. A new pipe's read end has no other status flag to keep.
      ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
#if defined(F_SETPIPE_SZ)
      (void)::fcntl(fds[0], F_SETPIPE_SZ, pipe_capacity); // a hint: the default 64 KiB also works
#endif
    }
    active_ = true;
  }

  [[nodiscard]] bool active() const noexcept { return active_; }
  [[nodiscard]] int child_stdout() const noexcept { return out_.write_end.get(); }
  [[nodiscard]] int child_stderr() const noexcept { return err_.write_end.get(); }

  /// In the parent, once the child is forked: only the child writes.
  void forked() noexcept {
    out_.write_end.reset();
    err_.write_end.reset();
  }

  /// The read ends still worth polling (-1 for none).
  [[nodiscard]] int stdout_fd() const noexcept { return out_.hung_up ? -1 : out_.read_end.get(); }
  [[nodiscard]] int stderr_fd() const noexcept { return err_.hung_up ? -1 : err_.read_end.get(); }

  /// Reads what the pipes hold now, at most a pipe's capacity from each, so
  /// a writer that never stops cannot keep the caller here. Once the child
  /// has been reaped, one call reads all it wrote.
  void drain() noexcept {
    for (captured_stream* s : {&out_, &err_}) drain(*s);
  }

  /// What was captured, once the child was reaped and drained; the pipes
  /// are closed.
  captured_output take() noexcept {
    captured_output o;
    if (!active_) return o;
    for (captured_stream* s : {&out_, &err_}) {
      if (s->tail.size() > limit_) s->tail.erase(0, s->tail.size() - limit_);
      s->read_end.reset();
    }
    o.out = std::move(out_.tail);
    o.err = std::move(err_.tail);
    o.out_bytes = out_.total;
    o.err_bytes = err_.total;
    o.captured = true;
    active_ = false;
    return o;
  }

private:
  void drain(captured_stream& s) noexcept {
    if (!s.read_end || s.hung_up) return;
    std::array<char, std::size_t{64} * 1024> buf; // NOLINT(cppcoreguidelines-pro-type-member-init): read() fills it
    std::size_t budget = pipe_capacity;
    while (budget != 0) {
      const ssize_t got = ::read(s.read_end.get(), buf.data(), buf.size());
      if (got > 0) {
        const auto n = static_cast<std::size_t>(got);
        try {
          s.keep(buf.data(), n, limit_);
        } catch (...) {
          s.total += n; // out of memory: count it, keep what there is
        }
        budget -= n < budget ? n : budget;
      } else if (got == 0) {
        s.hung_up = true;
        return;
      } else if (errno != EINTR) {
        return; // EAGAIN: nothing more now
      }
    }
  }

  captured_stream out_;
  captured_stream err_;
  std::size_t limit_ = 0;
  bool active_ = false;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_OUTPUT_CAPTURE_HPP
