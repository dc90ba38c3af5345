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

#include <cerrno>       // errno, EINTR, ECHILD
#include <chrono>       // deadlines
#include <csignal>      // sigset_t, SIGKILL, signal names
#include <cstdio>       // fflush, ftrylockfile
#include <exception>    // std::terminate
#include <string>       // signal_name fallback
#include <system_error> // std::system_error
#include <type_traits>  // std::is_void_v
#include <utility>      // std::exchange

#include <poll.h>     // ppoll
#include <pthread.h>  // pthread_sigmask
#include <sys/wait.h> // waitid
#include <unistd.h>   // fork, _exit, close

#if defined(__linux__)
#include <sys/syscall.h> // SYS_pidfd_open, SYS_pidfd_send_signal
#endif

namespace forksafe::detail {

/// Throws std::system_error carrying `err` and a sentence of context.
[[noreturn]] inline void throw_errno(int err, const char* context) {
  throw std::system_error(err, std::generic_category(), context);
}

/// The conventional name of a signal ("SIGSEGV"), or "signal N".
inline std::string signal_name(int sig) {
  struct entry {
    int number;
    const char* name;
  };
  static constexpr entry names[] = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
      {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},     {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
      {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"},     {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
      {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"},     {SIGTERM, "SIGTERM"}, {SIGCHLD, "SIGCHLD"},
      {SIGCONT, "SIGCONT"}, {SIGSTOP, "SIGSTOP"},     {SIGTSTP, "SIGTSTP"}, {SIGTTIN, "SIGTTIN"},
      {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"},       {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"},
      {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGSYS, "SIGSYS"},
  };
  for (const entry& e : names) {
    if (e.number == sig) return e.name;
  }
  return "signal " + std::to_string(sig);
}

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
  [[nodiscard]] bool exited_with(int code) const noexcept {
    return how == kind::exited && value == code;
  }
  [[nodiscard]] bool killed_by(int sig) const noexcept {
    return how == kind::signaled && value == sig;
  }
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
  /// Exit code of a child whose callable let an exception escape.
  int exit_code_on_exception = 125;
};

/// Flush stdout and stderr in a forked child without risking a hang: a stream
/// locked by a thread that did not survive fork() is skipped.
inline void flush_stdio_in_child() noexcept {
  for (FILE* f : {stdout, stderr}) {
    if (ftrylockfile(f) == 0) {
      fflush_unlocked(f);
      funlockfile(f);
    }
  }
}

#if defined(__linux__) && defined(SYS_pidfd_open)
inline int open_pidfd(pid_t pid) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
}
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
class child_process {
public:
  child_process() noexcept = default;
  child_process(child_process&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), pidfd_(std::exchange(other.pidfd_, -1)),
        status_(other.status_), own_group_(other.own_group_) {}
  child_process& operator=(child_process&& other) noexcept {
    if (this != &other) {
      release();
      pid_ = std::exchange(other.pid_, -1);
      pidfd_ = std::exchange(other.pidfd_, -1);
      status_ = other.status_;
      own_group_ = other.own_group_;
    }
    return *this;
  }
  child_process(const child_process&) = delete; // one owner reaps
  child_process& operator=(const child_process&) = delete;
  ~child_process() { release(); }

  /// Forks. The child restores the caller's signal mask, runs `body()` and
  /// ends with `_exit(code)`, where code is body's int result (0 for a void
  /// body) or options.exit_code_on_exception if it threw. The parent flushes
  /// stdio first, so buffered output is not printed twice, and blocks all
  /// signals across fork() so no handler runs in the child before `body`.
  /// Fork handlers registered with atfork_registry run, as on any fork().
  /// Throws std::system_error if fork fails (EAGAIN, ENOMEM).
  template <class Body>
  [[nodiscard]] static child_process spawn(Body&& body, const spawn_options& options = {}) {
    std::fflush(nullptr);
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const pid_t pid = ::fork();
    if (pid == 0) {
      run_child(body, options, old); // never returns
    }
    const int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) throw_errno(fork_errno, "forksafe: fork() failed");
    child_process c;
    c.pid_ = pid;
    c.own_group_ = options.own_process_group;
    if (c.own_group_) ::setpgid(pid, pid); // also done by the child: whoever runs first wins
    c.pidfd_ = open_pidfd(pid);
    return c;
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
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
    while (valid() && !try_reap()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      wait_a_while(std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
    }
    return status_;
  }

  /// Waits until the child ends.
  const child_status& wait() {
    return wait_until(std::chrono::steady_clock::time_point::max());
  }

  /// Sends `sig` to the child (and to its process group when it has its own).
  /// Does nothing once the child has been reaped: a pid is never signalled
  /// after it may have been reused.
  void kill(int sig) noexcept {
    if (!valid() || status_.ended()) return;
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
    if (!valid() || poll().ended()) return status_;
    kill(sig);
    wait();
    if (status_.how == child_status::kind::signaled && status_.value == sig) {
      status_.how = child_status::kind::timed_out;
    }
    return status_;
  }

private:
  template <class Body>
  [[noreturn]] static void run_child(Body& body, const spawn_options& options,
                                     const sigset_t& mask) noexcept {
    if (options.own_process_group) ::setpgid(0, 0);
    if (options.default_crash_handlers) {
      for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS}) {
        std::signal(sig, SIG_DFL);
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

  bool pidfd_readable(long timeout_ns) const noexcept {
    pollfd p{pidfd_, POLLIN, 0};
    timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000), timeout_ns % 1'000'000'000};
    return ::ppoll(&p, 1, &ts, nullptr) > 0;
  }

  void wait_a_while(std::chrono::nanoseconds left) {
    using namespace std::chrono_literals;
    if (pidfd_ >= 0) {
      // The pidfd turns readable when the child exits; EINTR just loops.
      const auto cap = std::chrono::nanoseconds(1h);
      pidfd_readable((left < cap ? left : cap).count());
      return;
    }
    // No pidfd: poll with a backoff bounded by 2 ms.
    backoff_ = backoff_ < 2ms ? (backoff_ == 0ns ? 20us : backoff_ * 2) : backoff_;
    const auto nap = left < backoff_ ? left : backoff_;
    timespec ts{0, static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(nap).count())};
    ::nanosleep(&ts, nullptr);
  }

  void release() noexcept {
    if (valid()) {
      try {
        kill_and_reap();
      } catch (...) {
        // waitid failed with something other than EINTR/ECHILD: nothing more can be done.
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
  std::chrono::nanoseconds backoff_{0};
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_CHILD_PROCESS_HPP
