// SPDX-License-Identifier: MIT
// forksafe/doctest.hpp, assertions that must fail, and how: every test case
// here fails on purpose. check_report.py runs this binary and reads its
// report: each failure's message (expected versus actual, the captured
// stderr, the file and line), each counted once, nothing printed twice.

#include "../support/fork_harness.hpp"

#include <forksafe/doctest.hpp>

#include <chrono>    // durations
#include <csignal>   // SIGTERM, SIGSEGV
#include <cstdio>    // std::fputs, std::puts
#include <cstdlib>   // std::abort, std::_Exit
#include <stdexcept> // an isolated body's exception

#include <signal.h> // sigprocmask
#include <unistd.h> // pause

using namespace std::chrono_literals;

TEST_CASE("fail: wrong exit code, with stderr") {
  FORKSAFE_CHECK_EXITS(std::fputs("stderr-before-crash\n", stderr); forksafe_test::load_through_null(), 3);
}

TEST_CASE("fail: the statement returned") { FORKSAFE_CHECK_SIGNALED((void)0, SIGTERM); }

TEST_CASE("fail: death without the pattern") {
  FORKSAFE_CHECK_DEATH(std::fputs("something else\n", stderr); std::_Exit(1), "expected words");
}

TEST_CASE("fail: exit code 0 is no death") { FORKSAFE_CHECK_DEATH(std::_Exit(0), ""); }

TEST_CASE("fail: did not hang") { FORKSAFE_CHECK_HANGS(std::_Exit(0), 5s); }

TEST_CASE("fail: did not finish in time") { FORKSAFE_CHECK_FINISHES_WITHIN(for (;;)::pause(), 100ms); }

TEST_CASE("fail: a blocked SIGTERM never arrives") {
  FORKSAFE_CHECK_SIGNALED(
      {
        sigset_t all;
        sigfillset(&all);
        ::sigprocmask(SIG_BLOCK, &all, nullptr);
        ::raise(SIGTERM);
        std::_Exit(0);
      },
      SIGTERM);
}

TEST_CASE("fail: closing every descriptor, then returning") {
  FORKSAFE_CHECK_FINISHES_WITHIN(forksafe_test::close_all_from(0), 10s);
}

TEST_CASE("fail: the statement's stdout is captured, not printed") {
  FORKSAFE_CHECK_EXITS(std::puts("CHILD-STDOUT-MARKER"); std::fflush(stdout); std::_Exit(1), 0);
}

TEST_CASE("fail: REQUIRE stops the test case") {
  FORKSAFE_REQUIRE_EXITS(std::_Exit(1), 2);
  FAIL_CHECK("NOT-REACHED-AFTER-REQUIRE");
}

TEST_CASE("fail: WARN reports but does not fail") {
  FORKSAFE_WARN_EXITS(std::_Exit(1), 2);
  FAIL_CHECK("the one failure of this test case");
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated assertions", 10s) {
  const int x = 1;
  CHECK(x == 1);
  CHECK(x == 2);
  MESSAGE("ISOLATED-MESSAGE ", x);
  INFO("context-", 42);
  CHECK(x == 3);
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated crash", 10s) {
  CHECK(true);
  forksafe_test::load_through_null();
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated overrun", 200ms) {
  for (;;) ::pause();
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated exception", 10s) { throw std::logic_error("bad-logic"); }

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated REQUIRE", 10s) {
  REQUIRE(1 == 2);
  FAIL_CHECK("NOT-REACHED-AFTER-ISOLATED-REQUIRE");
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated exit", 10s) { std::exit(0); }

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated subcase", 10s) {
  SUBCASE("first") {}
  SUBCASE("second") {}
}

FORKSAFE_ISOLATED_TEST_CASE("fail: isolated closes its report", 10s) {
  CHECK(true);
  forksafe_test::close_all_from(3);
}
