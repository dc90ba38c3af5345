// SPDX-License-Identifier: MIT
// forksafe/doctest.hpp, the assertions that must pass: each outcome judged
// as what it is, at every level; the bad statements of the issue (forking
// grandchildren, closing every descriptor, blocking every signal, unbounded
// output, exit() with atexit handlers) each reported as what it is; threads
// holding locks at the fork. Their failing twins are in
// expected_failures.cpp, judged by check_report.py.

#include "../support/fork_harness.hpp"

#include <forksafe/doctest.hpp>
#include <forksafe/fork_safe_mutex.hpp>

#include <atomic>  // the lock holder's flags
#include <chrono>  // durations
#include <csignal> // SIGABRT, SIGSEGV, SIGTERM
#include <cstdio>  // std::fputs
#include <cstdlib> // std::abort, std::exit, std::_Exit, std::atexit
#include <mutex>   // std::mutex: the negative control
#include <string>  // output patterns
#include <thread>  // the lock holder

#include <signal.h> // sigprocmask
#include <unistd.h> // fork, write, pause, _exit

using namespace std::chrono_literals;
using forksafe_test::must_end;

TEST_CASE("doctest header: each macro passes on the outcome it expects") {
  forksafe::testing::set_death_test_deadline(must_end);
  FORKSAFE_CHECK_EXITS(std::_Exit(3), 3);
  FORKSAFE_CHECK_EXITS(std::exit(4), 4);
  FORKSAFE_CHECK_SIGNALED(std::abort(), SIGABRT);
  FORKSAFE_CHECK_SIGNALED(forksafe_test::load_through_null(), SIGSEGV);
  FORKSAFE_CHECK_DEATH(std::fputs("fatal: out of widgets\n", stderr); std::abort(), "out of w[a-z]+");
  FORKSAFE_CHECK_DEATH(std::_Exit(1), "");
  FORKSAFE_CHECK_HANGS(for (;;)::pause(), 100ms);
  FORKSAFE_CHECK_FINISHES_WITHIN((void)0, must_end);
}

TEST_CASE("doctest header: WARN_ and REQUIRE_ levels") {
  FORKSAFE_WARN_EXITS(std::_Exit(0), 0);
  FORKSAFE_WARN_SIGNALED(::raise(SIGTERM), SIGTERM);
  FORKSAFE_WARN_DEATH(std::_Exit(2), "");
  FORKSAFE_WARN_HANGS(for (;;)::pause(), 50ms);
  FORKSAFE_WARN_FINISHES_WITHIN((void)0, must_end);
  FORKSAFE_REQUIRE_EXITS(std::_Exit(9), 9);
  FORKSAFE_REQUIRE_SIGNALED(::raise(SIGTERM), SIGTERM); // doctest's SIGTERM handler does not run in the child
  FORKSAFE_REQUIRE_DEATH(std::abort(), "");
  FORKSAFE_REQUIRE_HANGS(for (;;)::pause(), 50ms);
  FORKSAFE_REQUIRE_FINISHES_WITHIN((void)0, must_end);
}

TEST_CASE("doctest header: a statement that forks a grandchild and exits is judged at once") {
  forksafe_test::gate release; // the grandchild keeps the capture pipes until the test opens it
  FORKSAFE_CHECK_EXITS(
      {
        if (::fork() == 0) {
          release.wait();
          ::_exit(0);
        }
        std::_Exit(5);
      },
      5);
  release.open();
}

TEST_CASE("doctest header: a statement that closes every descriptor") {
  FORKSAFE_CHECK_EXITS(forksafe_test::close_all_from(0); std::_Exit(6), 6);
  FORKSAFE_CHECK_SIGNALED(forksafe_test::close_all_from(0); std::abort(), SIGABRT);
}

TEST_CASE("doctest header: a statement that blocks every signal still hangs only until its deadline") {
  FORKSAFE_CHECK_HANGS(
      {
        sigset_t all;
        sigfillset(&all);
        ::sigprocmask(SIG_BLOCK, &all, nullptr);
        for (;;) ::pause();
      },
      100ms);
}

TEST_CASE("doctest header: unbounded output neither blocks the statement nor hides the message at its end") {
  FORKSAFE_CHECK_HANGS(
      {
        const std::string noise(4096, 'x');
        for (;;) forksafe_test::write_all(2, noise);
      },
      200ms);
  FORKSAFE_CHECK_DEATH(
      {
        forksafe_test::write_all(2, std::string(10 << 20, 'x'));
        std::fputs("\nassertion failed: the last words\n", stderr);
        std::abort();
      },
      "the last words");
}

namespace {
std::atomic<bool> teardown_armed{false};
void teardown() {
  if (teardown_armed.load()) std::fputs("TEARDOWN RAN\n", stdout);
}
} // namespace

TEST_CASE("doctest header: exit() runs the child's atexit handlers in the child only, output captured") {
  static const int registered = std::atexit(teardown);
  REQUIRE(registered == 0);
  teardown_armed = true;
  const auto o = forksafe::testing::run_statement([] { std::exit(7); }, must_end);
  teardown_armed = false;
  CHECK(o.how == forksafe::testing::statement_outcome::kind::exited);
  CHECK(o.value == 7);
  CHECK(o.output.out == "TEARDOWN RAN\n"); // in the child's captured stdout, not in this process's
}

TEST_CASE("doctest header: a thread holding a fork_safe_mutex at the fork does not hang the statement") {
  forksafe::fork_safe_mutex m;
  std::atomic<bool> stop{false};
  std::thread holder([&] {
    while (!stop.load()) {
      const std::lock_guard<forksafe::fork_safe_mutex> lock(m);
      std::this_thread::sleep_for(200us);
    }
  });
  for (int i = 0; i < 20; ++i) {
    FORKSAFE_CHECK_EXITS(
        {
          m.lock();
          m.unlock();
          std::_Exit(0);
        },
        0);
  }
  stop = true;
  holder.join();
}

// Negative control: the same with std::mutex, held across the fork, hangs
// in the child, and the macro's deadline catches it.
TEST_CASE("doctest header: a std::mutex held at the fork hangs the statement (negative control)") {
  std::mutex m;
  std::atomic<bool> held{false};
  std::atomic<bool> release{false};
  std::thread holder([&] {
    const std::lock_guard<std::mutex> lock(m);
    held = true;
    while (!release.load()) std::this_thread::sleep_for(100us);
  });
  while (!held.load()) std::this_thread::yield();
  FORKSAFE_CHECK_HANGS(
      {
        m.lock();
        m.unlock();
      },
      300ms);
  release = true;
  holder.join();
}

TEST_CASE("doctest header: no zombie and no descriptor left behind") {
  const int before = forksafe_test::count_open_fds();
  for (int i = 0; i < 10; ++i) {
    FORKSAFE_CHECK_EXITS(std::_Exit(1), 1);
    FORKSAFE_CHECK_HANGS(for (;;)::pause(), 10ms);
  }
  CHECK(forksafe_test::count_open_fds() == before);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

FORKSAFE_ISOLATED_TEST_CASE("doctest header: an isolated test case's assertions reach the parent", must_end) {
  int x = 1;
  CHECK(x == 1);
  INFO("x is ", x);
  CHECK_THROWS_WITH(throw std::runtime_error("abc"), "abc");
  CHECK_NOTHROW((void)x);
  FORKSAFE_CHECK_EXITS(std::_Exit(2), 2); // a death test inside an isolated test case
  for (int i = 0; i < 1000; ++i) CHECK(i >= 0);
}

FORKSAFE_ISOLATED_TEST_CASE("doctest header: an isolated test case may change process-wide state freely", must_end) {
  CHECK(::setenv("FORKSAFE_ISOLATED_PROBE", "set in the child", 1) == 0);
  ::signal(SIGPIPE, SIG_DFL);
}

TEST_CASE("doctest header: ...and the parent's state is untouched") {
  CHECK(std::getenv("FORKSAFE_ISOLATED_PROBE") == nullptr);
}
