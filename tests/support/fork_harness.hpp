// SPDX-License-Identifier: MIT
//
// tests/support/fork_harness.hpp: run a test body in a forked child with a
// deadline, and read back how it ended.
//
// doctest has no process isolation, and forksafe's tests fork children that
// may deadlock or crash on purpose. run_in_child() is the test-side face of
// forksafe::detail::child_process (the library's own "fork, run, report"):
// the child runs the body and ends with _exit on every path (no doctest
// reporter, no atexit handler, no static destructor runs there), crash
// signals are reset to SIG_DFL so doctest's handler never reports a child's
// signal a second time, and a child still running at the deadline is killed
// and reaped and reported as timed out.
//
// A child body must not use doctest assertions: report through the exit
// code (return an int) and check the outcome in the parent. A test whose
// whole point is how a statement ends (a crash, a hang, a message on
// stderr) says so with forksafe/doctest.hpp instead (FORKSAFE_CHECK_HANGS,
// FORKSAFE_CHECK_DEATH, ...), which stands on fork_call as this does on
// child_process.
//
// No outcome may depend on how fast the machine runs: work is bounded by
// counts; a deadline that must not fire is stretched by scaled() (slow
// builds, loaded machines); a negative control whose child hangs for ever
// uses run_in_child_expected_to_hang, unscaled; and a test that must act
// while another thread waits sees it waiting (wait_until_blocked) instead of
// sleeping and assuming it got there.

#ifndef FORKSAFE_TESTS_SUPPORT_FORK_HARNESS_HPP
#define FORKSAFE_TESTS_SUPPORT_FORK_HARNESS_HPP

#include <forksafe/detail/child_process.hpp>

#include <algorithm>    // std::max
#include <cerrno>       // errno: the gate's errors
#include <chrono>       // deadlines
#include <csignal>      // sigaction: scoped_signal
#include <cstdio>       // std::snprintf: a /proc path without allocating
#include <cstdlib>      // std::strtol, std::getenv
#include <cstring>      // std::strrchr: /proc/self/task/<tid>/stat
#include <dirent.h>     // /proc scans
#include <fstream>      // /proc/<pid>/stat
#include <ostream>      // doctest's StringMaker
#include <string>       // std::string
#include <system_error> // std::system_error: the gate's errors
#include <thread>       // std::this_thread::yield: wait_until_blocked
#include <vector>       // filler descriptors

#include <fcntl.h>        // open: filler descriptors
#include <grp.h>          // setgroups: dropping root for RLIMIT_NPROC
#include <sys/prctl.h>    // PR_SET_DUMPABLE, PR_SET_SECCOMP
#include <sys/resource.h> // setrlimit
#include <sys/syscall.h>  // SYS_gettid: current_thread_id; SYS_close_range
#include <sys/wait.h>     // waitpid: the RLIMIT_NPROC control
#include <unistd.h>       // getpid, pipe, read, write, close, syscall

#if defined(__linux__)
#include <cstddef>         // offsetof: the seccomp filter
#include <linux/filter.h>  // sock_filter, BPF_STMT
#include <linux/seccomp.h> // seccomp_data, SECCOMP_RET_ERRNO
#include <sys/syscall.h>   // SYS_pidfd_open
#endif

#include <doctest/doctest.h>

#if defined(__SANITIZE_ADDRESS__)
#define FORKSAFE_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FORKSAFE_TEST_ASAN 1
#endif
#endif
#ifndef FORKSAFE_TEST_ASAN
#define FORKSAFE_TEST_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define FORKSAFE_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORKSAFE_TEST_TSAN 1
#endif
#endif
#ifndef FORKSAFE_TEST_TSAN
#define FORKSAFE_TEST_TSAN 0
#endif

namespace forksafe_test {

using outcome = forksafe::detail::child_status;
using kind = forksafe::detail::child_status::kind;

/// Crashes with SIGSEGV (a null load, exempt from UBSan, which would report
/// it first). For tests of how a crash is reported.
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("undefined")))
#endif
inline int
load_through_null() {
  volatile int* volatile p = nullptr;
  return *p;
}

/// How many times slower than an optimised build this one runs, for
/// deadlines that are the point of a test (a hang caught) and must never
/// fire merely because the machine is slow: 1 for a plain build, 4 under
/// AddressSanitizer or ThreadSanitizer, FORKSAFE_TEST_TIME_SCALE=N when set
/// (the valgrind runs set 20). Work is bounded by counts, never by time; only
/// deadlines are scaled.
inline double time_scale() {
  static const double scale = [] {
    if (const char* s = std::getenv("FORKSAFE_TEST_TIME_SCALE")) {
      const double v = std::strtod(s, nullptr);
      if (v >= 1) return v;
    }
    return FORKSAFE_TEST_ASAN || FORKSAFE_TEST_TSAN ? 4.0 : 1.0;
  }();
  return scale;
}

/// `d` stretched by time_scale(): a deadline generous on any machine.
inline std::chrono::milliseconds scaled(std::chrono::milliseconds d) {
  return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(d.count()) * time_scale()));
}

/// The timeout of a call, task or wait that must end (10 s, scaled): it only
/// turns a hang into a failure, so it is generous, and scaled so that a
/// loaded sanitizer build never trips it.
inline const std::chrono::milliseconds must_end = scaled(std::chrono::seconds(10));

/// `seconds` stretched by time_scale(), for an upper bound on an elapsed
/// time whose point is to catch a hang (a wait that should not have
/// happened), never to measure speed.
inline double scaled_seconds(double seconds) { return seconds * time_scale(); }

/// A poll() timeout in milliseconds, scaled as scaled() does.
inline int scaled_poll_ms(std::chrono::milliseconds d) { return static_cast<int>(scaled(d).count()); }

/// Seconds on the steady clock since `since`.
inline double elapsed_seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

namespace detail {
// run_in_child's and run_in_child_expected_to_hang's one body: `deadline`
// as given, counted from just after the fork.
template <class Body>
outcome run_until(Body&& body, std::chrono::milliseconds deadline) {
  forksafe::detail::spawn_options options;
  options.default_all_handlers = true; // doctest's SIGTERM/SIGINT handlers must not report from a child
  auto child = forksafe::detail::child_process::spawn(std::forward<Body>(body), options);
  const auto& status = child.wait_until(std::chrono::steady_clock::now() + deadline);
  if (status.ended()) return status;
  return child.kill_and_reap(SIGKILL);
}
} // namespace detail

/// Runs `body` in a forked child and waits at most `deadline` (scaled with
/// scaled()) for it to end; a child still running then is killed with
/// SIGKILL, reaped, and reported as timed_out. For a child that is meant to
/// end: the deadline only turns a hang into a failure.
template <class Body>
outcome run_in_child(Body&& body, std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
  return detail::run_until(std::forward<Body>(body), scaled(deadline));
}

/// As run_in_child, but `deadline` is not scaled: for a negative control
/// whose child is expected to hang for ever, where any deadline gives the
/// same outcome (timed_out) and a scaled one would only cost time.
template <class Body>
outcome run_in_child_expected_to_hang(Body&& body, std::chrono::milliseconds deadline) {
  return detail::run_until(std::forward<Body>(body), deadline);
}

/// The calling thread's kernel id (what /proc/self/task/ lists).
inline pid_t current_thread_id() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }

/// Whether thread `tid` of this process sleeps in the kernel (state S or D
/// in /proc/self/task/<tid>/stat): a thread that announced it is about to
/// block in a call is then inside that call. Allocates nothing (open and
/// read into a stack buffer), so a prepare handler may call it mid-fork.
inline bool thread_is_blocked(pid_t tid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%ld/stat", static_cast<long>(tid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char line[1024];
  const ssize_t n = ::read(fd, line, sizeof line - 1);
  ::close(fd);
  if (n <= 0) return false;
  line[n] = '\0';
  // Format: tid (comm) state ...; comm may hold ')', so take the last one.
  const char* close = std::strrchr(line, ')');
  if (close == nullptr || close[1] != ' ') return false;
  return close[2] == 'S' || close[2] == 'D';
}

/// Waits (yielding) until thread `tid` is seen blocked in the kernel, for a
/// test that must act while another thread waits (in a lock, in fork()'s
/// wait for a critical section): explicit, where a sleep would assume the
/// other thread got there in time. True once seen; false after `limit`, a
/// fallback that normally never fires (a wait that spins instead of
/// sleeping), so the test goes on, with the order no longer known, instead
/// of hanging. Allocates nothing.
inline bool wait_until_blocked(pid_t tid, std::chrono::milliseconds limit = scaled(std::chrono::seconds(10))) noexcept {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!thread_is_blocked(tid)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::yield();
  }
  return true;
}

/// Number of entries in /proc/self/fd (descriptors this process holds).
inline int count_open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    --n; // the descriptor opendir itself holds
  }
  return n;
}

/// Number of zombie children of this process, read from /proc/<pid>/stat.
inline int count_zombie_children() {
  const long self = static_cast<long>(::getpid());
  int zombies = 0;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // Format: pid (comm) state ppid ...; comm may hold spaces, so split at the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos || close + 4 > line.size()) continue;
    const char state = line[close + 2];
    const long ppid = std::strtol(line.c_str() + close + 4, nullptr, 10);
    if (ppid == self && state == 'Z') ++zombies;
  }
  ::closedir(d);
  return zombies;
}

/// A one-shot gate: a child blocks in wait() until the parent calls open().
/// Throws (no doctest assertion: it is also used inside children).
struct gate {
  int fds[2] = {-1, -1};
  gate() {
    if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "gate: pipe");
  }
  ~gate() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  gate(const gate&) = delete; // one pair of descriptors
  gate& operator=(const gate&) = delete;
  void wait() const { // in the child
    char c;
    while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  void open() const {
    if (::write(fds[1], "g", 1) != 1) throw std::system_error(errno, std::generic_category(), "gate: write");
  }
};

/// Sets a signal's disposition and restores the old one when the test ends,
/// even on a failed REQUIRE.
struct scoped_signal {
  int sig;
  struct sigaction old {};
  scoped_signal(int s, const struct sigaction& action) : sig(s) { REQUIRE(::sigaction(sig, &action, &old) == 0); }
  ~scoped_signal() { ::sigaction(sig, &old, nullptr); }
  scoped_signal(const scoped_signal&) = delete; // one restore
  scoped_signal& operator=(const scoped_signal&) = delete;
};

/// Resident set size of this process, in KiB (VmRSS in /proc/self/status).
inline long resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

/// In the calling process (and what it forks from then on): pidfd_open fails
/// with ENOSYS, as on Linux before 5.3 or under a seccomp profile that does
/// not know it. Returns false if the filter could not be installed.
inline bool refuse_pidfd_open() {
#if defined(__linux__) && defined(SYS_pidfd_open)
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
#else
  return false;
#endif
}

/// The highest descriptor number open in this process, or -1.
inline int highest_open_fd() {
  int highest = -1;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') highest = std::max(highest, std::atoi(e->d_name));
  }
  ::closedir(d);
  return highest;
}

/// Closes every descriptor from `first` on (close_range where the kernel has
/// it, else one by one): a child that leaves itself none.
inline void close_all_from(int first) {
#if defined(SYS_close_range)
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return;
#endif
  for (int fd = first; fd < 65536; ++fd) ::close(fd);
}

/// Runs `call`; 0 if it threw std::system_error carrying `err`, else 1 (no
/// exception), 2 (another errno) or 3 (another exception). For rlimit
/// children, which report through their exit code.
template <class Call>
int expect_system_error(Call&& call, int err) {
  try {
    call();
    return 1;
  } catch (const std::system_error& e) {
    return e.code().value() == err ? 0 : 2;
  } catch (...) {
    return 3;
  }
}

/// Lowers RLIMIT_NOFILE just above the highest open descriptor and fills
/// every slot below it; returns the filler descriptors (close some to free
/// slots). Call it in a run_in_child child: the limit stays there.
inline std::vector<int> fill_descriptor_table() {
  std::vector<int> fillers;
  const int highest = highest_open_fd();
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = static_cast<rlim_t>(highest + 17); // at least 16 fillers
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return fillers;
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    fillers.push_back(fd);
  }
  return fillers;
}

/// In a run_in_child child: makes every further fork() fail with EAGAIN
/// (RLIMIT_NPROC of 1; root ignores it, so a root child first becomes
/// nobody, 65534). Returns 0, or 20-23 if that could not be arranged or the
/// control fork still succeeded.
inline int allow_no_more_processes() {
  if (::geteuid() == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 20;
    ::prctl(PR_SET_DUMPABLE, 1); // keep /proc/self readable after the uid change
  }
  const rlimit one{1, 1};
  if (::setrlimit(RLIMIT_NPROC, &one) != 0) return 21;
  const pid_t pid = ::fork(); // control: the limit binds
  if (pid == 0) ::_exit(0);
  if (pid > 0) {
    ::waitpid(pid, nullptr, 0);
    return 22;
  }
  return errno == EAGAIN ? 0 : 23;
}

/// Shared mappings (permissions "rw-s") in this process: what a pool maps
/// for its slots and large results. Private mappings are left out: sanitizer
/// runtimes map and keep regions of their own as a process runs.
inline int count_shared_maps() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    const auto space = line.find(' ');
    n += space != std::string::npos && space + 4 < line.size() && line[space + 4] == 's' ? 1 : 0;
  }
  return n;
}

/// Writes all of `s` to `fd` (blocking; stops at the first error): what a
/// child writes to its stdout or stderr in the output-capture tests.
inline void write_all(int fd, const std::string& s) noexcept {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

/// A process that no longer runs: gone, or a zombie nobody reaped yet.
inline bool process_is_dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  const char state = line[close + 2];
  return state == 'Z' || state == 'X';
}

} // namespace forksafe_test

namespace doctest {
template <>
struct StringMaker<forksafe::detail::child_status> {
  static String convert(const forksafe::detail::child_status& s) { return ("child " + s.describe()).c_str(); }
};
} // namespace doctest

#endif // FORKSAFE_TESTS_SUPPORT_FORK_HARNESS_HPP
