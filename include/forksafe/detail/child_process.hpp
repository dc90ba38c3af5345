// SPDX-License-Identifier: MIT
//
// forksafe/detail/child_process.hpp: the one "fork, run, report" primitive.
//
// detail::child_process forks a child that runs a callable and ends with
// _exit on every path, and gives the parent an owning handle: wait with a
// deadline, kill, and a precise account of how the child ended (exit code,
// signal, timed out, or lost to a foreign reaper). fork_call, process_pool,
// the test harness and the demo all build on it, so the hard cases (EINTR,
// SIGCHLD ignored or reaped elsewhere, pid reuse, stdio duplication, crash
// handlers inherited by the child) are solved once.
//
// Linux: waiting uses a pidfd (Linux 5.3+) and waitid(P_PIDFD) (5.4+), so a
// pid reused after a foreign reaper took our child is never mistaken for
// ours. Elsewhere, or on older kernels, it falls back to waitid(P_PID) with a
// bounded polling backoff.

#ifndef FORKSAFE_DETAIL_CHILD_PROCESS_HPP
#define FORKSAFE_DETAIL_CHILD_PROCESS_HPP

#include "config.hpp"
#include "deadlines.hpp"
#include "owner_process.hpp"
#include "registry.hpp"
#include "signal_names.hpp"
#include "stdio_around_fork.hpp"
#include "system_errors.hpp"

#include <array>        // std::array
#include <cerrno>       // errno, EINTR, ECHILD
#include <chrono>       // deadlines
#include <csignal>      // sigset_t, SIGKILL
#include <iterator>     // std::size
#include <string>       // describe()
#include <system_error> // fork_unprepared
#include <type_traits>  // std::is_void_v
#include <utility>      // std::exchange

#include <poll.h>     // ppoll
#include <pthread.h>  // pthread_sigmask
#include <sys/wait.h> // waitid
#include <unistd.h>   // fork, _exit, close

#if defined(__linux__)
#include <sys/syscall.h> // SYS_pidfd_open, SYS_pidfd_send_signal
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// How a child ended, as far as its parent could observe it.
struct child_status {
  enum class kind : unsigned char {
    running,   ///< not ended yet (or not observed to have ended)
    exited,    ///< called _exit/exit: `value` is the exit code
    signaled,  ///< killed by signal `value`, not sent by forksafe
    timed_out, ///< killed by forksafe with signal `value` because a deadline passed
    lost,      ///< ended, but somebody else reaped it (SIGCHLD ignored or a foreign waitpid)
  };
  kind how = kind::running;
  int value = 0;

  [[nodiscard]] bool ended() const noexcept { return how != kind::running; }
  [[nodiscard]] bool exited_with(int code) const noexcept { return how == kind::exited && value == code; }
  [[nodiscard]] bool killed_by(int sig) const noexcept { return how == kind::signaled && value == sig; }
  friend bool operator==(const child_status&, const child_status&) = default;

  /// A sentence such as "exited with code 3" or "was killed by SIGSEGV".
  [[nodiscard]] std::string describe() const {
    switch (how) {
    case kind::running: return "is still running";
    case kind::exited: return "exited with code " + std::to_string(value);
    case kind::signaled: return "was killed by " + signal_name(value);
    case kind::timed_out: return "timed out and was killed by " + signal_name(value);
    case kind::lost: return "ended but was reaped by someone else (SIGCHLD ignored or a foreign waitpid)";
    }
    return "is in an unknown state";
  }
};

/// Options for child_process::spawn.
struct spawn_options {
  /// Put the child in a new process group, so kill() also reaches its descendants.
  bool own_process_group = false;
  /// Reset SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP and SIGSYS to
  /// SIG_DFL in the child, so a crash ends the child with that signal instead
  /// of running a handler inherited from the parent (a test framework's, say).
  bool default_crash_handlers = true;
  /// Reset every signal with a handler installed (not only crash signals) to
  /// SIG_DFL in the child; ignored signals stay ignored. For a child that is
  /// a process of its own rather than a part of its parent: a process_pool
  /// worker, or a test body, whose SIGTERM must not run the parent's (or the
  /// test framework's) handler.
  bool default_all_handlers = false;
  /// Exit code of a child whose callable let an exception escape.
  int exit_code_on_exception = 125;
  /// When not negative, the child's standard output (standard error) becomes
  /// this descriptor (dup2 before the callable runs): captured output.
  int stdout_to = -1;
  int stderr_to = -1;
  /// The fork's preparation (the registry's handlers) must be done by then,
  /// as well as within the registry's prepare timeout; otherwise nothing is
  /// forked and spawn throws fork_unprepared.
  std::chrono::steady_clock::time_point prepare_deadline = std::chrono::steady_clock::time_point::max();
};

/// What held back a fork that could not be prepared in time: "the fork could
/// not be prepared within N ms; held back by ..." (format_unprepared).
inline std::string unprepared_reason(const fork_stats& s) {
  std::array<char, 1024> line{};
  format_unprepared(s, line.data(), line.size());
  return line.data();
}

/// Thrown by child_process::spawn when the fork could not be prepared in
/// time: no child was made. code() is ETIMEDOUT; what() names what held the
/// fork back, as the registry's report line does.
class fork_unprepared : public std::system_error {
public:
  explicit fork_unprepared(const fork_stats& s)
      : std::system_error(ETIMEDOUT, std::generic_category(), describe(s)), stats_(s) {}
  /// What held the fork back.
  [[nodiscard]] const fork_stats& stats() const noexcept { return stats_; }

private:
  static std::string describe(const fork_stats& s) { return "forksafe: no child was forked: " + unprepared_reason(s); }
  fork_stats stats_;
};
#if defined(__linux__) && defined(SYS_pidfd_open)
inline int open_pidfd(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U)); }
#else
inline int open_pidfd(pid_t) noexcept { return -1; }
#endif

#ifndef P_PIDFD
#define FORKSAFE_P_PIDFD static_cast<idtype_t>(3)
#else
#define FORKSAFE_P_PIDFD P_PIDFD
#endif

/// An owned child process. Move-only. Not thread-safe: one owner drives it.
/// Destroying a handle whose child has not been reaped kills it (SIGKILL, and
/// its process group when it has its own) and reaps it, so no zombie is left.
/// In a process forked from the owner the handle is inert: the child is not
/// that process's child, so destroying the inherited copy there only closes
/// its descriptor and neither signals nor waits for anything.
class child_process {
public:
  child_process() noexcept = default;
  child_process(child_process&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), pidfd_(std::exchange(other.pidfd_, -1)), status_(other.status_),
        own_group_(other.own_group_), owner_(other.owner_), prepare_time_(other.prepare_time_) {}
  child_process& operator=(child_process&& other) noexcept {
    if (this != &other) {
      release();
      pid_ = std::exchange(other.pid_, -1);
      pidfd_ = std::exchange(other.pidfd_, -1);
      status_ = other.status_;
      own_group_ = other.own_group_;
      owner_ = other.owner_;
      prepare_time_ = other.prepare_time_;
    }
    return *this;
  }
  child_process(const child_process&) = delete; // one owner reaps
  child_process& operator=(const child_process&) = delete;
  ~child_process() { release(); }

  /// Forks. The child restores the caller's signal mask, runs `body()` and
  /// ends with `_exit(code)`, where code is body's int result (0 for a void
  /// body) or options.exit_code_on_exception if it threw. The parent flushes
  /// stdio and the standard C++ streams first (flush_stdio_in_parent), so
  /// buffered output is not printed twice, and the child flushes its own
  /// before _exit (flush_stdio_in_child). The parent blocks all
  /// signals across fork() so no handler runs in the child before `body`.
  /// Fork handlers registered with atfork_registry run, as on any fork().
  /// Throws std::system_error if fork fails (EAGAIN, ENOMEM).
  template <class Body>
  [[nodiscard]] static child_process spawn(Body&& body, const spawn_options& options = {}) {
    flush_stdio_in_parent();
    const output_marks marks = mark_output();
    // With default_all_handlers the child resets every handled signal, crash signals included.
    const unsigned crash_handlers =
        options.default_crash_handlers && !options.default_all_handlers ? installed_crash_handlers() : 0U;
    if (options.default_all_handlers) {
      static const bool sigaction_bound = [] { // see to_default
        struct sigaction current {};
        return ::sigaction(SIGKILL, nullptr, &current) == 0;
      }();
      (void)sigaction_bound;
    }
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // Prepared before fork() (with every signal blocked, so no handler can
    // fork in between), so a fork that cannot be prepared in time is not
    // made at all; fork()'s own handlers then find the work done.
    fork_stats prepared;
    const auto deadline =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.prepare_deadline.time_since_epoch()).count();
    if (!prepare_ahead(deadline, prepared)) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw fork_unprepared(prepared);
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      run_child(body, options, old, crash_handlers, marks); // never returns
    }
    const int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) throw_errno(fork_errno, "forksafe: fork() failed");
    child_process c;
    c.prepare_time_ = std::chrono::nanoseconds(prepared.waited_ns);
    c.pid_ = pid;
    c.own_group_ = options.own_process_group;
    c.owner_.set();
    if (c.own_group_) ::setpgid(pid, pid); // also done by the child: whoever runs first wins
    c.pidfd_ = open_pidfd(pid);
    return c;
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// How long the fork waited for its preparation (the registry's handlers).
  [[nodiscard]] std::chrono::nanoseconds prepare_time() const noexcept { return prepare_time_; }
  /// A pidfd that becomes readable when the child ends, or -1 without pidfd support.
  [[nodiscard]] int native_handle() const noexcept { return pidfd_; }
  [[nodiscard]] bool valid() const noexcept { return pid_ > 0; }
  [[nodiscard]] const child_status& status() const noexcept { return status_; }

  /// Reaps the child if it has ended; never blocks.
  const child_status& poll() {
    if (valid() && !status_.ended()) try_reap();
    return status_;
  }

  /// Waits until the child ends or `deadline` passes; returns the status,
  /// `running` if the deadline passed. EINTR is retried.
  template <class Clock, class Duration>
  const child_status& wait_until(std::chrono::time_point<Clock, Duration> deadline) {
    return wait_until(deadline, wake_fds{-1, -1, -1});
  }

  /// Descriptors a wait also wakes for; negative entries are ignored (a
  /// value-initialised one holds zeros, standard input: list all three).
  using wake_fds = std::array<int, 3>;

  /// Like wait_until(deadline), but also returns early, with the child
  /// possibly still `running`, once one of `wake` is readable or hung up, so
  /// a caller can wait for the child's end or for data the child sends, in
  /// one wait (fork_call's result frame where there is no pidfd, its
  /// captured output). A descriptor at EOF stays "readable": stop passing it
  /// once it hung up, or this returns at once.
  template <class Clock, class Duration>
  const child_status& wait_until(std::chrono::time_point<Clock, Duration> deadline, const wake_fds& wake) {
    while (valid() && !try_reap()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      if (wait_a_while(std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now), wake)) break;
    }
    return status_;
  }

  /// Waits until the child ends.
  const child_status& wait() { return wait_until(std::chrono::steady_clock::time_point::max()); }

  /// Gives the child until `deadline` to end, then kills it (SIGKILL) if it
  /// still runs, reaps it and lets it go: the handle is empty after. Never
  /// throws, for cleanup paths: if waitid fails, the wait ends there and the
  /// child is killed all the same, but then stays unreaped (a zombie until
  /// this process ends), as no wait for it works.
  template <class Clock, class Duration>
  void end_by(std::chrono::time_point<Clock, Duration> deadline) noexcept {
    try {
      wait_until(deadline);
    } catch (const std::system_error&) {
      // waitid failed (neither EINTR nor ECHILD): waiting longer cannot help.
    }
    *this = child_process(); // release(): kills it if it runs, reaps it
  }

  /// Sends `sig` to the child (and to its process group when it has its own).
  /// Does nothing once the child has been reaped (a pid is never signalled
  /// after it may have been reused), nor in a process forked from the owner
  /// (the child is its sibling there, not its child).
  void kill(int sig) noexcept {
    if (!valid() || status_.ended() || !owner_.here()) return;
    if (own_group_) ::kill(-pid_, sig);
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
    if (pidfd_ >= 0) {
      ::syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0U);
      return;
    }
#endif
    ::kill(pid_, sig);
  }

  /// Kills the child with `sig` if it still runs and reaps it. A child that
  /// was still running is reported as timed_out with `sig`.
  const child_status& kill_and_reap(int sig = SIGKILL) {
    if (!valid() || !owner_.here() || poll().ended()) return status_;
    kill(sig);
    wait();
    if (status_.how == child_status::kind::signaled && status_.value == sig) {
      status_.how = child_status::kind::timed_out;
    }
    return status_;
  }

private:
  static constexpr std::array crash_signals{SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};

  // Bit i: crash_signals[i] is not at SIG_DFL. Asked in the parent, where it
  // costs a few system calls, so the child (where every page of code it runs
  // for the first time is a page fault) resets only what needs resetting,
  // usually nothing.
  static unsigned installed_crash_handlers() noexcept {
    unsigned mask = 0;
    for (unsigned i = 0; i < std::size(crash_signals); ++i) {
      struct sigaction current {};
      if (::sigaction(crash_signals[i], nullptr, &current) != 0 || current.sa_handler != SIG_DFL) {
        mask |= 1U << i;
      }
    }
    return mask;
  }

  // sigaction, not std::signal: the parent has called sigaction already (so
  // the child finds it bound), and a first call of signal in every child
  // would cost a lazy symbol lookup there, about ten page faults.
  static void to_default(int sig) noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(sig, &dfl, nullptr);
  }

  template <class Body>
  [[noreturn]] static void run_child(Body& body, const spawn_options& options, const sigset_t& mask,
                                     unsigned crash_handlers, const output_marks& marks) noexcept {
    discard_inherited_output(marks);
    if (options.stdout_to >= 0) ::dup2(options.stdout_to, STDOUT_FILENO);
    if (options.stderr_to >= 0) ::dup2(options.stderr_to, STDERR_FILENO);
    if (options.own_process_group) ::setpgid(0, 0);
    for (unsigned i = 0; i < std::size(crash_signals); ++i) {
      if ((crash_handlers & (1U << i)) != 0) to_default(crash_signals[i]);
    }
    if (options.default_all_handlers) {
      for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction current {};
        if (sig == SIGKILL || sig == SIGSTOP || ::sigaction(sig, nullptr, &current) != 0) continue;
        if (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN) to_default(sig);
      }
    }
    pthread_sigmask(SIG_SETMASK, &mask, nullptr);
    int code = 0;
    try {
      if constexpr (std::is_void_v<decltype(body())>) {
        body();
      } else {
        code = static_cast<int>(body());
      }
    } catch (...) {
      code = options.exit_code_on_exception;
    }
    flush_stdio_in_child();
    ::_exit(code);
  }

  // Returns true once the child's end has been observed.
  bool try_reap() {
    siginfo_t info{};
    int rc;
    do {
      rc = pidfd_ >= 0 ? ::waitid(FORKSAFE_P_PIDFD, static_cast<id_t>(pidfd_), &info, WEXITED | WNOHANG)
                       : ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
      if (errno != ECHILD) throw_errno(errno, "forksafe: waitid() on a child failed");
      // Reaped by someone else. Without a pidfd, ECHILD may also mean the
      // kernel auto-reaps (SIGCHLD ignored) and the child still runs.
      if (pidfd_ < 0 && ::kill(pid_, 0) == 0) return false;
      if (pidfd_ >= 0 && !pidfd_readable(0)) return false;
      status_ = {child_status::kind::lost, 0};
      return true;
    }
    if (info.si_pid == 0) return false;
    if (info.si_code == CLD_EXITED) {
      status_ = {child_status::kind::exited, info.si_status};
    } else {
      status_ = {child_status::kind::signaled, info.si_status};
    }
    return true;
  }

  [[nodiscard]] bool pidfd_readable(long timeout_ns) const noexcept {
    pollfd p{pidfd_, POLLIN, 0};
    const timespec ts = to_timespec(std::chrono::nanoseconds(timeout_ns));
    return ::ppoll(&p, 1, &ts, nullptr) > 0;
  }

  // Sleeps until the pidfd turns readable (the child exited), one of `wake`
  // is readable, or `left` passes; without a pidfd, for a backoff from 20 us
  // doubling to 2.56 ms. Returns true if one of `wake` woke it. EINTR just
  // returns: the caller loops and re-checks.
  bool wait_a_while(std::chrono::nanoseconds left, const wake_fds& wake) {
    using namespace std::chrono_literals;
    std::chrono::nanoseconds nap = left;
    if (pidfd_ >= 0) {
      nap = left < std::chrono::nanoseconds(1h) ? left : std::chrono::nanoseconds(1h);
    } else {
      backoff_ = backoff_ < 2ms ? (backoff_ == 0ns ? 20us : backoff_ * 2) : backoff_;
      nap = left < backoff_ ? left : backoff_;
    }
    // poll() ignores entries with a negative descriptor.
    std::array<pollfd, 4> fds{{{pidfd_, POLLIN, 0}, {wake[0], POLLIN, 0}, {wake[1], POLLIN, 0}, {wake[2], POLLIN, 0}}};
    const timespec ts = to_timespec(nap);
    if (::ppoll(fds.data(), fds.size(), &ts, nullptr) <= 0) return false;
    return fds[1].revents != 0 || fds[2].revents != 0 || fds[3].revents != 0;
  }

  void release() noexcept {
    if (valid() && owner_.here()) {
      try {
        kill_and_reap();
      } catch (...) {
        // waitid failed with something other than EINTR/ECHILD: the child
        // cannot be reaped here, but it does not run on.
        kill(SIGKILL);
      }
    }
    if (pidfd_ >= 0) ::close(pidfd_);
    pid_ = -1;
    pidfd_ = -1;
  }

  pid_t pid_ = -1;
  int pidfd_ = -1;
  child_status status_{};
  bool own_group_ = false;
  owner_process owner_; // the process that forked the child: the only one that may kill and reap it
  std::chrono::nanoseconds backoff_{0};
  std::chrono::nanoseconds prepare_time_{0};
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_CHILD_PROCESS_HPP
