// SPDX-License-Identifier: MIT
//
// forksafe/doctest.hpp: death tests, hang tests and an isolated test case,
// in a test binary that has a logging thread holding its lock most of the
// time. With googletest's fast death tests, that thread is the classic
// hazard: the child inherits the log mutex locked and the first log line in
// the statement deadlocks. Here the fork goes through forksafe's registry,
// so the logger's fork_safe_mutex is taken before the fork and free in the
// child; each statement runs in a child with a deadline, its stderr
// captured and matched.
//
// Run it as any doctest binary (-s shows every passing assertion). Exits 0
// when every test case passes.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <forksafe/doctest.hpp>         // FORKSAFE_CHECK_DEATH, FORKSAFE_ISOLATED_TEST_CASE, ...
#include <forksafe/fork_safe_mutex.hpp> // the logger's lock

#include <atomic>  // the logger's stop flag
#include <chrono>  // durations
#include <csignal> // SIGABRT
#include <cstdio>  // std::fprintf
#include <cstdlib> // std::abort, std::exit, std::setenv
#include <mutex>   // std::lock_guard
#include <stdexcept>
#include <string> // the configuration
#include <thread> // the logger thread

using namespace std::chrono_literals;

namespace {

// A logger whose thread holds its lock while it "writes"; every log call
// takes it too. It is never destroyed, only shut down at the end of main: a
// statement that calls exit() runs the static destructors in the child, and
// a destructor joining the logger's thread there would wait for a thread the
// child does not have.
struct logger {
  forksafe::fork_safe_mutex m;
  std::atomic<bool> stop{false};
  std::thread flusher{[this] {
    while (!stop.load()) {
      const std::lock_guard<forksafe::fork_safe_mutex> lock(m);
      std::this_thread::sleep_for(500us); // "flushing to disk"
    }
  }};
  void log(const char* line) {
    const std::lock_guard<forksafe::fork_safe_mutex> lock(m);
    std::fprintf(stderr, "%s\n", line);
  }
  void shut_down() {
    stop = true;
    flusher.join();
  }
};

logger& log() {
  static logger& instance = *new logger; // never destroyed: see above
  return instance;
}

// The code under test: a configuration check that logs and aborts on bad input.
int parse_port(const std::string& text) {
  const int port = std::stoi(text);
  if (port <= 0 || port > 65535) {
    log().log(("fatal: port out of range: " + text).c_str());
    std::abort();
  }
  return port;
}

[[noreturn]] void usage_and_exit() {
  log().log("usage: server --port N");
  std::exit(2);
}

void wait_for_reply_that_never_comes() {
  for (;;) std::this_thread::sleep_for(1h);
}

} // namespace

TEST_CASE("a bad port aborts with a message, though the logger thread holds its lock") {
  (void)log(); // the logger thread runs from here on
  FORKSAFE_CHECK_DEATH(parse_port("70000"), "port out of range: 70000");
  FORKSAFE_CHECK_SIGNALED(parse_port("-1"), SIGABRT);
  CHECK(parse_port("8080") == 8080);
}

TEST_CASE("--help exits with code 2") { FORKSAFE_CHECK_EXITS(usage_and_exit(), 2); }

TEST_CASE("a reply that never comes hangs, and the hang is caught in 100 ms") {
  FORKSAFE_CHECK_HANGS(wait_for_reply_that_never_comes(), 100ms);
  FORKSAFE_CHECK_FINISHES_WITHIN((void)parse_port("443"), 10s);
}

// A whole test case in a child: it may change process-wide state (the
// environment, signal dispositions) without touching the other test cases,
// and a crash in it would fail this test case alone.
FORKSAFE_ISOLATED_TEST_CASE("an isolated test case changes the environment for itself only", 10s) {
  REQUIRE(::setenv("SERVER_MODE", "maintenance", 1) == 0);
  CHECK(std::string(std::getenv("SERVER_MODE")) == "maintenance");
  log().log("logged from an isolated test case");
}

TEST_CASE("the environment outside is untouched") { CHECK(std::getenv("SERVER_MODE") == nullptr); }

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int failed = context.run();
  log().shut_down();
  return failed;
}
