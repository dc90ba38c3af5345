// SPDX-License-Identifier: MIT
// fork_options::capture_output: what a child writes to stdout and stderr
// reaches process_result::output() and child_error::output(), kept to the
// last capture_limit bytes; a child writing 10 MiB is drained as the parent
// waits; nothing waits for a grandchild that holds the pipes; nothing leaks.
// And fork_options::reset_signal_handlers.

#include "support/expect_error.hpp"
#include "support/fork_harness.hpp"

#include <forksafe/fork_call.hpp>

#include <atomic>   // the handler's flag
#include <chrono>   // deadlines
#include <csignal>  // SIGSEGV, SIGTERM
#include <cstdio>   // std::printf, std::fputs
#include <iostream> // std::cout, std::cerr
#include <string>   // the patterns

#include <fcntl.h>  // O_NONBLOCK
#include <unistd.h> // write, pipe, fork

using namespace std::chrono_literals;
using forksafe::fork_options;
using forksafe_test::must_end;

namespace {

fork_options capturing(std::size_t limit = 64 * 1024) {
  fork_options o;
  o.timeout = must_end;
  o.capture_output = true;
  o.capture_limit = limit;
  return o;
}

// Numbered lines, so a tail cut in the wrong place shows.
std::string numbered_lines(std::size_t bytes) {
  std::string s;
  for (unsigned i = 0; s.size() < bytes; ++i) s += "line " + std::to_string(i) + "\n";
  s.resize(bytes);
  return s;
}

} // namespace

TEST_CASE("capture: stdout and stderr arrive apart, on the handle, after success" * doctest::test_suite("memcheck")) {
  auto r = forksafe::fork_call(capturing(), [] {
    std::printf("printf ");
    std::cout << "cout" << std::flush;
    std::fputs("fputs ", stderr);
    std::cerr << "cerr";
    forksafe_test::write_all(1, " fd1");
    return 7;
  });
  CHECK(r.get() == 7);
  const forksafe::captured_output& o = r.output();
  CHECK(o.captured);
  // std::flush on a synchronised std::cout flushes stdout, printf's text first.
  CHECK(o.out == "printf cout fd1");
  CHECK(o.err == "fputs cerr");
  CHECK(o.out_bytes == o.out.size());
  CHECK_FALSE(o.out_truncated());
}

TEST_CASE("capture: off by default, and nothing is captured then" * doctest::test_suite("memcheck")) {
  auto r = forksafe::fork_call(fork_options{.timeout = must_end}, [] { return 1; });
  CHECK(r.get() == 1);
  CHECK_FALSE(r.output().captured);
  CHECK(r.output().out.empty());
}

TEST_CASE("capture: the child's output does not reach the parent's stdout or stderr") {
  // In a harness child whose own fds 1 and 2 are pipes we can read.
  const auto outcome = forksafe_test::run_in_child([]() -> int {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK) != 0) return 10;
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    auto r = forksafe::fork_call(capturing(), [] {
      std::puts("to stdout");
      std::fputs("to stderr", stderr);
    });
    r.get();
    char buf[64];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) return 11; // it leaked through
    return r.output().out == "to stdout\n" && r.output().err == "to stderr" ? 0 : 12;
  });
  CHECK(outcome.exited_with(0));
}

TEST_CASE("capture: 10 MiB on stderr neither blocks the child nor loses the tail that fits") {
  const std::string pattern = numbered_lines(10 << 20);
  const std::size_t limit = 100 * 1000; // not a power of two, nor a pipe's size
  auto r = forksafe::fork_call(capturing(limit), [&] {
    forksafe_test::write_all(2, pattern);
    forksafe_test::write_all(1, "done");
  });
  r.get(); // within must_end: the parent drained as it waited
  const auto& o = r.output();
  CHECK(o.err_bytes == pattern.size());
  CHECK(o.err.size() == limit);
  CHECK(o.err == pattern.substr(pattern.size() - limit));
  CHECK(o.err_truncated());
  CHECK(o.out == "done");
}

TEST_CASE("capture: 10 MiB written while the parent is busy elsewhere arrives once it waits") {
  const std::string pattern = numbered_lines(10 << 20);
  auto r = forksafe::fork_call(capturing(1000), [&] { forksafe_test::write_all(1, pattern); });
  // The child fills the pipe and pauses; the parent waits later.
  std::this_thread::sleep_for(20ms);
  r.get();
  CHECK(r.output().out_bytes == pattern.size());
  CHECK(r.output().out == pattern.substr(pattern.size() - 1000));
}

TEST_CASE("capture: a crash keeps what the child wrote before it, on the child_error") {
  auto r = forksafe::fork_call(capturing(), []() -> int {
    std::fputs("about to crash\n", stderr);
    std::printf("unflushed stdout is lost with the process\n");
    return forksafe_test::load_through_null();
  });
  const auto e = forksafe_test::error_of(r);
  REQUIRE(e);
  CHECK(e->signaled());
  CHECK(e->signal_number() == SIGSEGV);
  CHECK(e->output().captured);
  CHECK(e->output().err == "about to crash\n");
  CHECK(e->output().out.empty());
  CHECK(r.output().err == "about to crash\n"); // the handle says the same
}

TEST_CASE("capture: a child that exits, throws or times out keeps its output too") {
  SUBCASE("exit") {
    auto r = forksafe::fork_call(capturing(), [] {
      std::fputs("bye", stderr);
      std::exit(3);
    });
    const auto e = forksafe_test::error_of(r);
    REQUIRE(e);
    CHECK(e->exit_code() == 3);
    CHECK(e->output().err == "bye");
  }
  SUBCASE("throw") {
    auto r = forksafe::fork_call(capturing(), []() -> int {
      forksafe_test::write_all(1, "before");
      throw std::runtime_error("boom");
    });
    const auto e = forksafe_test::error_of(r);
    REQUIRE(e);
    CHECK(e->threw());
    CHECK(e->output().out == "before");
  }
  SUBCASE("timeout") {
    fork_options o = capturing();
    o.timeout = 200ms;
    auto r = forksafe::fork_call(o, [] {
      forksafe_test::write_all(2, "waiting");
      for (;;) ::pause();
    });
    const auto e = forksafe_test::error_of(r);
    REQUIRE(e);
    CHECK(e->timed_out());
    CHECK(e->output().err == "waiting");
  }
}

TEST_CASE("capture: a limit of zero keeps nothing and counts everything" * doctest::test_suite("memcheck")) {
  auto r = forksafe::fork_call(capturing(0), [] { forksafe_test::write_all(2, "12345"); });
  r.get();
  CHECK(r.output().err.empty());
  CHECK(r.output().err_bytes == 5);
  CHECK(r.output().err_truncated());
}

TEST_CASE("capture: a grandchild holding the pipes open does not delay the result") {
  forksafe_test::gate release;
  pid_t grandchild = -1;
  int report[2];
  REQUIRE(::pipe(report) == 0);
  auto r = forksafe::fork_call(capturing(), [&] {
    const pid_t g = ::fork();
    if (g == 0) {
      release.wait(); // keeps fds 1 and 2, the capture pipes, open
      ::_exit(0);
    }
    (void)!::write(report[1], &g, sizeof g);
    forksafe_test::write_all(1, "child done");
  });
  r.get(); // returns although the grandchild still holds the write ends
  CHECK(r.output().out == "child done");
  REQUIRE(::read(report[0], &grandchild, sizeof grandchild) == sizeof grandchild);
  CHECK_FALSE(forksafe_test::process_is_dead(grandchild));
  release.open();
  ::close(report[0]);
  ::close(report[1]);
}

TEST_CASE("capture: a child that closes every descriptor is reported as it ended") {
  auto r = forksafe::fork_call(capturing(), [] {
    forksafe_test::write_all(2, "closing");
    forksafe_test::close_all_from(0);
    ::_exit(3);
  });
  const auto e = forksafe_test::error_of(r);
  REQUIRE(e);
  CHECK(e->exit_code() == 3);
  CHECK(e->output().err == "closing");
}

TEST_CASE("capture: no descriptor is left open, on any outcome" * doctest::test_suite("memcheck")) {
  const int before = forksafe_test::count_open_fds();
  for (int i = 0; i < 20; ++i) {
    auto ok = forksafe::fork_call(capturing(), [] { std::puts("x"); });
    ok.get();
    auto bad = forksafe::fork_call(capturing(), [] { std::exit(1); });
    CHECK(forksafe_test::error_of(bad));
  }
  CHECK(forksafe_test::count_open_fds() == before);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

namespace {
std::atomic<int> sigterm_handled{0};
extern "C" void count_sigterm(int) { sigterm_handled.fetch_add(1); }
} // namespace

TEST_CASE("reset_signal_handlers: the parent's SIGTERM handler does not run in the child") {
  struct sigaction handler {};
  handler.sa_handler = count_sigterm;
  const forksafe_test::scoped_signal keep(SIGTERM, handler);
  SUBCASE("reset: the child dies of SIGTERM") {
    fork_options o{.timeout = must_end};
    o.reset_signal_handlers = true;
    auto r = forksafe::fork_call(o, [] { ::raise(SIGTERM); });
    const auto e = forksafe_test::error_of(r);
    REQUIRE(e);
    CHECK(e->signal_number() == SIGTERM);
  }
  SUBCASE("negative control: without it, the inherited handler runs and the child returns") {
    auto r = forksafe::fork_call(fork_options{.timeout = must_end}, [] {
      ::raise(SIGTERM);
      return sigterm_handled.load();
    });
    CHECK(r.get() == 1);
  }
}
