// SPDX-License-Identifier: MIT
//
// tests/peers/peer_support.hpp: what the ports of the peers' fork test
// suites share.
//
//   run_scenario()      run_in_child() plus a notes pipe: the sandbox (and
//                       anything it forks) writes what it saw; the parent
//                       reads it for its checks and failure messages.
//   run_hanging_scenario()  the same for a negative control (the deadline,
//                       expected to fire, is not scaled).
//   CHECK_SCENARIO_OK   the sandbox exited 0; otherwise says how it ended and
//                       what it noted.
//   hang_caught()       a negative control's verdict: the deadline fired (or,
//                       under TSan, TSan saw the deadlock first and aborted).
//   op_log              a fixed-size log fork handlers append to without
//                       allocating (a fork handler should not allocate).
//   error_of()          the child_error a process_result's get() throws:
//                       forksafe_test::error_of, from ../support/expect_error.hpp,
//                       the one tests/ use too.
//   lock_held_registry  the design the peers fixed: one lock held while
//                       handlers run, taken again by add and remove (glibc
//                       before 2.36, musl). Negative controls only, and only
//                       inside a sandbox: it installs pthread_atfork handlers,
//                       which cannot be removed.
//
// A peer test claims what it claims about its own library; these ports claim
// the same of forksafe. Where forksafe's contract differs, the test says so.

#ifndef FORKSAFE_TESTS_PEERS_PEER_SUPPORT_HPP
#define FORKSAFE_TESTS_PEERS_PEER_SUPPORT_HPP

#include "../support/expect_error.hpp"
#include "../support/fork_harness.hpp"

#include <cerrno>       // EINTR
#include <chrono>       // deadlines
#include <csignal>      // SIGABRT
#include <cstdarg>      // va_list: notes
#include <cstddef>      // std::size_t
#include <cstdio>       // std::vsnprintf
#include <functional>   // lock_held_registry's handlers
#include <mutex>        // lock_held_registry's lock
#include <string>       // notes, logs
#include <system_error> // the notes pipe could not be made
#include <vector>       // lock_held_registry's entries

#include <fcntl.h>   // O_NONBLOCK
#include <pthread.h> // pthread_atfork
#include <unistd.h>  // pipe2, read, write

namespace peers {

using namespace std::chrono_literals;

/// Where a sandbox writes what it saw. Copied into every process forked
/// after it was made (a descriptor number): a grandchild may note too.
/// Writes never block (the pipe is non-blocking; a note that does not fit
/// is cut).
class notes {
public:
  explicit notes(int fd) noexcept : fd_(fd) {}

  /// printf-style; one write per call.
  __attribute__((format(printf, 2, 3))) void add(const char* format, ...) const noexcept {
    char buffer[512];
    va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    if (n > 0) {
      const auto len = static_cast<std::size_t>(n) < sizeof buffer ? static_cast<std::size_t>(n) : sizeof buffer - 1;
      (void)!::write(fd_, buffer, len);
    }
  }

private:
  int fd_;
};

/// How a sandbox ended and everything it (and what it forked) noted.
struct scenario {
  forksafe_test::outcome outcome;
  std::string notes;
};

namespace detail {
// Runs `body(out)` through `run` (a run_in_child flavour), collecting the notes.
template <class Run, class Body>
scenario noted(Run run, Body& body) {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "notes pipe");
  const notes out(fds[1]);
  scenario s;
  s.outcome = run([&] { return body(out); });
  ::close(fds[1]);
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n > 0) {
      s.notes.append(buffer, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break; // drained (EAGAIN) or every write end closed
    }
  }
  ::close(fds[0]);
  return s;
}
} // namespace detail

/// Runs `body(const notes&)` (returning its exit code) in a run_in_child
/// sandbox with `deadline`, scaled as run_in_child does: for a scenario that
/// must end.
template <class Body>
scenario run_scenario(Body body, std::chrono::milliseconds deadline = 10s) {
  return detail::noted([deadline](auto&& b) { return forksafe_test::run_in_child(b, deadline); }, body);
}

/// The same for a negative control, whose sandbox is expected to hang for
/// ever: `deadline` is not scaled (any deadline gives the same outcome).
template <class Body>
scenario run_hanging_scenario(Body body, std::chrono::milliseconds deadline = 1500ms) {
  return detail::noted([deadline](auto&& b) { return forksafe_test::run_in_child_expected_to_hang(b, deadline); },
                       body);
}

/// A negative control's verdict: the deadline caught the hang. Under TSan
/// its deadlock detector (double lock, lock-order inversion) may see the
/// same deadlock first and abort the sandbox (halt_on_error): that counts
/// too, and only there.
inline bool hang_caught(const forksafe_test::outcome& o) {
  return o.how == forksafe_test::kind::timed_out || (FORKSAFE_TEST_TSAN && o.killed_by(SIGABRT));
}

/// A log of small integers or short words that fork handlers append to
/// without allocating. Not thread-safe: the handlers of one fork run on one
/// thread.
class op_log {
public:
  void push(int v) noexcept {
    if (n_ < capacity) v_[n_++] = v;
  }
  void clear() noexcept { n_ = 0; }
  /// "73 72 71 " for comparison and failure messages.
  [[nodiscard]] std::string str() const {
    std::string s;
    for (std::size_t i = 0; i < n_; ++i) s += std::to_string(v_[i]) + ' ';
    return s;
  }

private:
  static constexpr std::size_t capacity = 64;
  int v_[capacity] = {};
  std::size_t n_ = 0;
};

/// A text log for fork handlers, appended to without allocating.
class text_log {
public:
  void add(const char* s) noexcept {
    while (*s != '\0' && n_ + 1 < sizeof text_) text_[n_++] = *s++;
    text_[n_] = '\0';
  }
  void clear() noexcept { n_ = 0, text_[0] = '\0'; }
  [[nodiscard]] const char* c_str() const noexcept { return text_; }
  [[nodiscard]] std::string str() const { return text_; }

private:
  char text_[512] = {};
  std::size_t n_ = 0;
};

/// The registry design the peers moved away from: one lock, held from the
/// first prepare handler to the last parent/child handler, and taken again
/// by add() and remove(). A handler that adds or removes an entry (directly,
/// or by dlclose'ing a library that does) deadlocks on it: glibc before 2.36
/// (BZ #24595), musl. For negative controls in a sandbox only.
class lock_held_registry {
public:
  static lock_held_registry& instance() {
    static lock_held_registry* const r = new lock_held_registry(); // leaky, like the real one
    return *r;
  }
  int add(std::function<void()> prepare, std::function<void()> parent, std::function<void()> child) {
    std::lock_guard hold(lock_);
    entries_.push_back({std::move(prepare), std::move(parent), std::move(child), true});
    return static_cast<int>(entries_.size()) - 1;
  }
  void remove(int id) {
    std::lock_guard hold(lock_);
    entries_[static_cast<std::size_t>(id)].live = false;
  }

private:
  struct entry {
    std::function<void()> prepare, parent, child;
    bool live;
  };
  lock_held_registry() { ::pthread_atfork(&on_prepare, &on_parent, &on_child); }
  static void on_prepare() {
    auto& r = instance();
    r.lock_.lock(); // held until on_parent / on_child
    for (auto it = r.entries_.rbegin(); it != r.entries_.rend(); ++it) {
      if (it->live && it->prepare) it->prepare();
    }
  }
  static void run_after(std::function<void()> entry::*which) {
    auto& r = instance();
    for (auto& e : r.entries_) {
      if (e.live && e.*which) (e.*which)();
    }
    r.lock_.unlock();
  }
  static void on_parent() { run_after(&entry::parent); }
  static void on_child() { run_after(&entry::child); }

  std::mutex lock_;
  std::vector<entry> entries_;
};

} // namespace peers

/// The sandbox exited 0; otherwise the failure says how it ended and what it noted.
#define CHECK_SCENARIO_OK(s)                                                                                           \
  do {                                                                                                                 \
    INFO("sandbox ", (s).outcome.describe(), "; it noted: ", (s).notes);                                               \
    CHECK((s).outcome.exited_with(0));                                                                                 \
  } while (false)

#endif // FORKSAFE_TESTS_PEERS_PEER_SUPPORT_HPP
