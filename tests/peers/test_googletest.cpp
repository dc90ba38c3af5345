// SPDX-License-Identifier: MIT
// googletest's death tests (googletest/test/googletest-death-test-test.cc and
// googletest-death-test_ex_test.cc), ported to forksafe::fork_call.
//
// A death test runs a statement in a child and reads how it ended: lived,
// returned, threw, exited with code N, killed by signal S. fork_call runs a
// callable in a child and reports the same through its value or a
// child_error (plus timed_out and lost, which googletest does not have).
// googletest matches the child's stderr against a regex: those cases use
// forksafe/doctest.hpp's FORKSAFE_CHECK_DEATH, which captures it.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/doctest.hpp> // FORKSAFE_CHECK_DEATH, run_statement: the stderr-matching cases
#include <forksafe/process_pool.hpp>
#include <forksafe/process_result.hpp>

#include "peer_support.hpp"

#include <atomic>    // the registry counter
#include <csignal>   // raise, SIGPROF
#include <cstdio>    // std::fprintf: the dying messages
#include <exception> // std::exception
#include <optional>  // std::optional<child_error>
#include <regex>     // a message that does not match
#include <string>    // what()
#include <thread>    // sleeps

#include <fcntl.h>    // O_NONBLOCK
#include <spawn.h>    // posix_spawn: googletest's clone-based "threadsafe" style
#include <sys/time.h> // setitimer
#include <sys/wait.h> // waitpid
#include <unistd.h>   // _exit, fork

extern char** environ;

using namespace std::chrono_literals;
using forksafe::child_error;
using forksafe::fork_call;
using forksafe::process_pool;
using forksafe_test::error_of;

namespace {

// googletest's ExitedWithCode(n) and KilledBySignal(s), over a child_error.
bool exited_with_code(const std::optional<child_error>& e, int code) {
  return e && e->exited() && e->exit_code() == code;
}
bool killed_by_signal(const std::optional<child_error>& e, int sig) {
  return e && e->signaled() && e->signal_number() == sig;
}

// A fork_call child keeps the parent's signal handlers, and doctest's catch
// SIGTERM and friends: the signals these tests raise go to SIG_DFL.
struct default_signal {
  forksafe_test::scoped_signal restore;
  explicit default_signal(int sig) : restore(sig, dfl()) {}
  static struct sigaction dfl() {
    struct sigaction a {};
    a.sa_handler = SIG_DFL;
    sigemptyset(&a.sa_mask);
    return a;
  }
};

} // namespace

TEST_CASE("googletest ExitStatusPredicateTest ExitedWithCode: a child that calls _exit(N) is reported as exited with "
          "N, and with no other code") {
  for (int code : {0, 1, 42}) {
    auto r = fork_call([](int n) -> int { ::_exit(n); }, code);
    const auto e = error_of(r);
    CHECK_MESSAGE(exited_with_code(e, code), "code ", code);
    CHECK_FALSE(exited_with_code(e, code == 0 ? 1 : 0));
    CHECK_FALSE(killed_by_signal(e, SIGSEGV));
  }
}

TEST_CASE("googletest ExitStatusPredicateTest KilledBySignal: a child killed by SIGSEGV or SIGKILL is reported as "
          "killed by that signal") {
  auto segv = fork_call([]() -> int {
    ::raise(SIGSEGV); // fork_call resets crash handlers (doctest's, a sanitizer's) in its child
    ::_exit(1);
  });
  auto kill = fork_call([]() -> int {
    ::raise(SIGKILL);
    ::_exit(1);
  });
  const auto e_segv = error_of(segv);
  const auto e_kill = error_of(kill);
  REQUIRE(e_segv.has_value());
  REQUIRE(e_kill.has_value());
  CHECK(killed_by_signal(e_segv, SIGSEGV));
  CHECK(killed_by_signal(e_kill, SIGKILL));
  CHECK_FALSE(killed_by_signal(e_segv, SIGKILL));
  CHECK_FALSE(killed_by_signal(e_kill, SIGSEGV));
  CHECK(e_segv->signal_name() == "SIGSEGV");
  CHECK(e_kill->signal_name() == "SIGKILL");
}

namespace {
// TestExitMacros: each statement and what it must be reported as.
enum class ending { exit_1, exit_42, kill, usr2, exit_0, segv };
int run_ending(ending how) {
  switch (how) {
  case ending::exit_1: ::_exit(1);
  case ending::exit_42: ::_exit(42);
  case ending::kill: ::raise(SIGKILL); break;
  case ending::usr2: ::raise(SIGUSR2); break;
  case ending::exit_0: ::_exit(0);
  case ending::segv: ::raise(SIGSEGV); break;
  }
  return -1; // the signal did not end the process
}

// Checks the outcome table against results produced by `run(how)`.
template <class Run>
void check_exit_macros(Run run) {
  const default_signal usr2(SIGUSR2);
  CHECK(exited_with_code(run(ending::exit_1), 1));
  CHECK(exited_with_code(run(ending::exit_42), 42));
  CHECK(killed_by_signal(run(ending::kill), SIGKILL));
  CHECK(killed_by_signal(run(ending::usr2), SIGUSR2));
  // googletest's expected failures: a clean exit is not a crash, a crash not an exit.
  CHECK_FALSE(killed_by_signal(run(ending::exit_0), SIGSEGV));
  CHECK_FALSE(exited_with_code(run(ending::segv), 0));
}
} // namespace

TEST_CASE("googletest TestForDeathTest ExitMacros: _exit(1), _exit(42), SIGKILL and SIGUSR2 are each reported as what "
          "happened") {
  check_exit_macros([](ending how) {
    auto r = fork_call(run_ending, how);
    return error_of(r);
  });
}

// googletest's "use fork" flag runs the same table with fork() instead of
// clone(); here the second way in is a pool of pre-forked workers.
TEST_CASE("googletest TestForDeathTest ExitMacrosUsingFork: the same outcomes through process_pool workers") {
  process_pool pool(2);
  check_exit_macros([&](ending how) {
    auto r = pool.submit(run_ending, how);
    return error_of(r);
  });
  CHECK(pool.submit([] { return 7; }).get() == 7); // the pool went on
}

// googletest: a statement that does not die fails the death test ("failed
// to die"). forksafe: a child that lives delivers its value, and that is
// never confused with a child that exited with code 0.
TEST_CASE("googletest TestForDeathTest DoesNotDie and RunawayIsFailure: a child that lives returns its value; _exit(0) "
          "is not living") {
  auto lives = fork_call([] { return 5; });
  CHECK(lives.get() == 5);
  auto returns_void = fork_call([] {});
  CHECK_FALSE(error_of(returns_void).has_value());
  auto exits_zero = fork_call([]() -> int { ::_exit(0); });
  CHECK(exited_with_code(error_of(exits_zero), 0));
}

// googletest: a statement that returns out of the death test is an error
// ("illegal return in test statement"): the child must not go on running
// the test's code. forksafe: whatever leaves the callable ends in
// fork_call's child; a process the callable forks that returns into
// fork_call ends there too (exit 0, no report) instead of running on.
TEST_CASE("googletest TestForDeathTest ReturnIsFailure: a process that returns out of the child's callable ends there, "
          "never running the caller's code") {
  int marks[2];
  REQUIRE(::pipe2(marks, O_NONBLOCK) == 0);
  auto r = fork_call([] {
    const pid_t grandchild = ::fork();
    if (grandchild == 0) return 99; // returns into fork_call's child code, in the grandchild
    int status = 0;
    ::waitpid(grandchild, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
  });
  const pid_t here = ::getpid(); // every process that gets past fork_call marks the pipe
  (void)!::write(marks[1], &here, sizeof here);
  CHECK(r.get() == 0); // the grandchild ended with 0 and reported nothing
  ::close(marks[1]);
  int processes = 0;
  for (pid_t p = 0; ::read(marks[0], &p, sizeof p) == sizeof p;) {
    ++processes;
    CHECK(p == ::getpid());
  }
  ::close(marks[0]);
  CHECK(processes == 1);
}

TEST_CASE("googletest CxxExceptionDeathTest ExceptionIsFailure: a child that throws is reported as threw, with the "
          "type, and nothing escapes") {
  auto r = fork_call([]() -> int { throw 1; });
  std::optional<child_error> e;
  CHECK_NOTHROW(e = error_of(r));
  REQUIRE(e.has_value());
  CHECK(e->threw());
  CHECK(e->exception_type() == "int");
  CHECK(e->exception_what().empty());
}

namespace {
class test_exception : public std::exception {
public:
  [[nodiscard]] const char* what() const noexcept override { return "exceptional message"; }
};
} // namespace

TEST_CASE(
    "googletest CxxExceptionDeathTest PrintsMessageForStdExceptions: the exception's message reaches the parent") {
  auto r = fork_call([]() -> int { throw test_exception(); });
  const auto e = error_of(r);
  REQUIRE(e.has_value());
  CHECK(e->threw());
  CHECK(e->exception_what() == "exceptional message");
  CHECK(std::string(e->what()).find("exceptional message") != std::string::npos);
  CHECK(e->exception_type().find("test_exception") != std::string::npos);
}

TEST_CASE("googletest TestForDeathTest DeathTestBadExitCodeOutput: the error names the exit code it saw") {
  auto r = fork_call([]() -> int { ::_exit(1); });
  const auto e = error_of(r);
  REQUIRE(e.has_value());
  CHECK(std::string(e->what()).find("exited with code 1") != std::string::npos);
  CHECK(e->exit_code() != 3);
}

namespace {
// googletest's DieInside: a message on stderr, then _exit(1).
[[noreturn]] void die_inside(const std::string& function) {
  std::fprintf(stderr, "death inside %s().", function.c_str());
  std::fflush(stderr);
  ::_exit(1);
}
[[noreturn]] void die_with_message(const char* message) {
  std::fputs(message, stderr);
  std::fflush(stderr);
  ::_exit(1);
}
struct test_for_death_test {
  static void static_member_function() { die_inside("StaticMemberFunction"); }
  void member_function() const { die_inside("MemberFunction"); }
};
} // namespace

TEST_CASE("googletest TestForDeathTest StaticMemberFunctionRegex and MemberFunctionRegex: the regex is searched for in "
          "the child's stderr") {
  FORKSAFE_CHECK_DEATH(test_for_death_test::static_member_function(), "death.*StaticMember");
  const test_for_death_test t;
  FORKSAFE_CHECK_DEATH(t.member_function(), "inside.*MemberFunction");
}

TEST_CASE("googletest TestForDeathTest EmptyRegexMatchesAnything") {
  FORKSAFE_CHECK_DEATH(die_inside("GlobalFunction"), "");
}

TEST_CASE("googletest TestForDeathTest AcceptsAnythingConvertibleToRE: a C string or a std::string") {
  const char* const c_string = "GlobalFunction";
  const std::string regex = "GlobalFunction";
  FORKSAFE_CHECK_DEATH(die_inside("GlobalFunction"), c_string);
  FORKSAFE_CHECK_DEATH(die_inside("GlobalFunction"), regex);
}

TEST_CASE("googletest TestForDeathTest DeathTestMultiLineMatchPass: a regex may span lines") {
  FORKSAFE_CHECK_DEATH(die_with_message("line 1\nline 2\nline 3\n"), "line 1\nline 2\nline 3");
}

TEST_CASE("googletest TestForDeathTest ErrorMessageMismatch and DeathTestMultiLineMatchFail: a message that does not "
          "match is a failure, and the message is there to show") {
  const auto o = forksafe::testing::run_statement([] { die_with_message("death\n"); }, forksafe_test::must_end);
  CHECK(o.how == forksafe::testing::statement_outcome::kind::exited);
  CHECK(o.output.err == "death\n");
  CHECK_FALSE(std::regex_search(o.output.err, std::regex("expected message")));
  const auto lines =
      forksafe::testing::run_statement([] { die_with_message("line 1\nline 2\n"); }, forksafe_test::must_end);
  CHECK_FALSE(std::regex_search(lines.output.err, std::regex("line 1\nline 3")));
}

TEST_CASE("googletest TestForDeathTest InsideLoop and ThreadsafeDeathTestInLoop: children forked in a loop each report "
          "their own exit code") {
  for (int i = 0; i < 5; ++i) {
    auto r = fork_call([](int n) -> int { ::_exit(n); }, i);
    CHECK_MESSAGE(exited_with_code(error_of(r), i), "i = ", i);
  }
}

namespace {
void sigprof_action(int, siginfo_t*, void*) {}
} // namespace

// googletest: death tests work while a 1 µs ITIMER_PROF fires SIGPROF, and
// leave the handler installed.
TEST_CASE("googletest TestForDeathTest FastSigprofActionSet: fork_call works under a 1 us SIGPROF timer and leaves the "
          "handler in place") {
  struct sigaction action {};
  sigemptyset(&action.sa_mask);
  action.sa_sigaction = sigprof_action;
  action.sa_flags = SA_RESTART | SA_SIGINFO;
  const forksafe_test::scoped_signal prof(SIGPROF, action);
  itimerval timer{};
  timer.it_interval.tv_usec = 1;
  timer.it_value = timer.it_interval;
  REQUIRE(::setitimer(ITIMER_PROF, &timer, nullptr) == 0);
  int right = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = fork_call([](int n) -> int { ::_exit(n); }, i % 4);
    right += exited_with_code(error_of(r), i % 4) ? 1 : 0;
    right += fork_call([](int n) { return n * 3; }, i).get() == i * 3 ? 1 : 0;
  }
  timer = {};
  ::setitimer(ITIMER_PROF, &timer, nullptr);
  struct sigaction now {};
  ::sigaction(SIGPROF, nullptr, &now);
  CHECK(right == 40);
  const bool handler_kept = now.sa_sigaction == sigprof_action; // doctest cannot print function pointers
  CHECK(handler_kept);
}

// googletest's "threadsafe" style starts its child with clone(), so atfork
// hooks do not run (DoesNotExecuteAtforkHooks). fork_call is a fork(): it
// runs the registry's handlers (that is how its child gets consistent
// locks); a clone-based spawn runs none.
TEST_CASE("googletest TestForDeathTest DoesNotExecuteAtforkHooks: fork_call runs the registry's handlers; a "
          "posix_spawn (clone) child runs none") {
  std::atomic<int> prepares{0};
  auto h = forksafe::atfork_registry::instance().add([&] { prepares.fetch_add(1); }, nullptr, nullptr);
  CHECK(fork_call([] { return 1; }).get() == 1);
  CHECK(prepares == 1);
  pid_t pid = -1;
  char arg0[] = "true";
  char* argv[] = {arg0, nullptr};
  REQUIRE(::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) == 0);
  int status = -1;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(prepares == 1);
}

TEST_CASE("googletest InDeathTestChildDeathTest ReportsDeathTestCorrectly: fork_generation() tells a child (and a "
          "grandchild) from the parent") {
  CHECK(forksafe::fork_generation() == 0);
  const auto in_child = fork_call([] { return forksafe::fork_generation(); }).get();
  CHECK(in_child == 1);
  const auto in_grandchild =
      fork_call([] { return fork_call([] { return forksafe::fork_generation(); }).get(); }).get();
  CHECK(in_grandchild == 2);
  CHECK(forksafe::fork_generation() == 0);
}
