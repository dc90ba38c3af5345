// SPDX-License-Identifier: MIT
// The fork harness must bite: a hang is reported as timed out, a crash as
// its signal, a normal end as its exit code, and nothing is left behind.

#include "support/fork_harness.hpp"

#include <atomic>  // the holder's flag
#include <csignal> // SIGSEGV
#include <mutex>   // std::mutex: the negative control
#include <thread>  // the lock-holding thread

#include <fcntl.h>    // O_NONBLOCK
#include <sys/wait.h> // waitid(WNOWAIT): a zombie left in place
#include <unistd.h>   // pipe, read, write

using namespace std::chrono_literals;
using forksafe_test::kind;
using forksafe_test::run_in_child;
using forksafe_test::run_in_child_expected_to_hang;

TEST_CASE("harness: reports a child that returns normally as exited 0" * doctest::test_suite("memcheck")) {
  const auto outcome = run_in_child([] {});
  CHECK(outcome.exited_with(0));
}

TEST_CASE("harness: reports the exit code a child returns" * doctest::test_suite("memcheck")) {
  CHECK(run_in_child([] { return 42; }).exited_with(42));
}

TEST_CASE("harness: reports a child that dereferences null as killed by SIGSEGV") {
  const auto outcome = run_in_child(forksafe_test::load_through_null);
  CHECK(outcome.killed_by(SIGSEGV));
  CHECK(outcome.describe() == "was killed by SIGSEGV");
}

TEST_CASE("harness: reports a child whose body throws with the documented exit code" *
          doctest::test_suite("memcheck")) {
  const auto outcome = run_in_child([]() -> int { throw 7; });
  CHECK(outcome.exited_with(forksafe::detail::spawn_options{}.exit_code_on_exception));
}

// The fork-while-locked deadlock with std::mutex: another thread holds the mutex at the
// fork; the child's first lock never returns. The thread keeps the mutex
// until the child has been judged, so the fork is known to happen while it
// is held and the hang is certain rather than likely (a thread looping
// lock / sleep 2 ms / unlock would leave a loaded machine room to fork
// between two holds).
TEST_CASE("harness: reports the fork-while-locked std::mutex deadlock as timed out (negative control)" *
          doctest::test_suite("memcheck")) {
  std::mutex m;
  std::atomic<bool> held{false};
  std::atomic<bool> release{false};
  std::thread holder([&] {
    const std::lock_guard<std::mutex> lock(m);
    held.store(true);
    while (!release.load()) std::this_thread::sleep_for(100us);
  });
  while (!held.load()) std::this_thread::yield();
  const auto outcome = run_in_child_expected_to_hang(
      [&] {
        m.lock();
        m.unlock();
      },
      300ms);
  release.store(true);
  holder.join();
  CHECK(outcome.how == kind::timed_out);
  CHECK(outcome.value == SIGKILL);
}

// A child ends with _exit: a static destructor that would write to a pipe
// must not run there.
struct writes_on_destruction {
  int fd;
  ~writes_on_destruction() { (void)!::write(fd, "d", 1); }
};

TEST_CASE("harness: a child runs no static destructors or atexit handlers" * doctest::test_suite("memcheck")) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const auto outcome = run_in_child([&] {
    static writes_on_destruction w{fds[1]};
    (void)w;
  });
  ::close(fds[1]);
  char c;
  CHECK(outcome.exited_with(0));
  CHECK(::read(fds[0], &c, 1) == 0); // EOF: nothing was written
  ::close(fds[0]);
}

TEST_CASE("harness: leaves no zombie and no descriptor behind" * doctest::test_suite("memcheck")) {
  const int fds_before = forksafe_test::count_open_fds();
  for (int i = 0; i < 20; ++i) {
    (void)run_in_child([] {});
    (void)run_in_child_expected_to_hang([] { ::pause(); }, 20ms);
  }
  CHECK(forksafe_test::count_zombie_children() == 0);
  CHECK(forksafe_test::count_open_fds() == fds_before);
}

TEST_CASE("harness: end_by waits for a child until its deadline at most, then kills and reaps it") {
  using forksafe::detail::child_process;
  const auto timed_end_by = [](child_process& c, std::chrono::milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    c.end_by(start + limit);
    CHECK_FALSE(c.valid()); // let go: nothing left to signal or reap
    return std::chrono::steady_clock::now() - start;
  };
  child_process quick = child_process::spawn([] { return 3; });
  CHECK(timed_end_by(quick, 60s) < 30s); // waited for its exit, not for the deadline
  child_process stuck = child_process::spawn([] { ::pause(); });
  const auto took = timed_end_by(stuck, 50ms);
  CHECK(took >= 50ms);
  CHECK(took < 30s); // bounded: killed at the deadline
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("harness: the zombie counter sees a zombie (it can fail)") {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  REQUIRE(pid > 0);
  // WNOWAIT: returns once the child has ended, and leaves it a zombie: no
  // guess at how long its exit takes.
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0);
  CHECK(forksafe_test::count_zombie_children() == 1);
  ::waitpid(pid, nullptr, 0);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

// The compile-time half of the negative-control mechanism: a constrained API
// rejects a type, observed with a requires-expression. The expression must
// depend on a template parameter: outside a template an invalid expression in
// a requires-expression is a hard error, not `false`.
template <class T>
requires std::is_integral_v<T>
void only_integers(T) {}

template <class T>
concept accepted_by_only_integers = requires(T v) {
  only_integers(v);
};

static_assert(accepted_by_only_integers<int>);
static_assert(!accepted_by_only_integers<double>);
