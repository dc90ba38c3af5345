// SPDX-License-Identifier: MIT
//
// forksafe/doctest.hpp: death tests, hang tests and isolated test cases for
// doctest, safe in a test binary whose threads hold locks. Include it after
// <doctest/doctest.h> (and after defining any DOCTEST_CONFIG_ macro);
// forksafe's other headers never need doctest.
//
// Defines, each at doctest's three levels (WARN_, CHECK_, REQUIRE_):
//   FORKSAFE_CHECK_EXITS(statement, code)        ends the process with exit code `code`
//   FORKSAFE_CHECK_SIGNALED(statement, signo)    is killed by signal `signo`
//   FORKSAFE_CHECK_DEATH(statement, regex)       ends abnormally, stderr matching `regex`
//   FORKSAFE_CHECK_HANGS(statement, duration)    does not finish within `duration`
//   FORKSAFE_CHECK_FINISHES_WITHIN(statement, d) returns normally within `d`
//   FORKSAFE_ISOLATED_TEST_CASE(name, deadline)  a test case run in a child
// and, in forksafe::testing, what they stand on: run_statement() and
// statement_outcome, set_death_test_deadline().
//
// The statement runs in a child made by fork_call, so the fork goes through
// the atfork_registry (fork-safe mutexes and quiesce locks other threads
// hold are taken first) and every path in the child ends with _exit. In the
// child, doctest's signal handlers (the crash signals, SIGINT, SIGTERM) are
// back at SIG_DFL, doctest's reporters print nothing and what the statement
// writes to stdout and stderr is captured, not printed; nothing the child
// does reaches doctest's state in the parent. Each child is killed (with its
// process group) and reaped before the macro returns.

#ifndef FORKSAFE_DOCTEST_HPP
#define FORKSAFE_DOCTEST_HPP

#include <doctest/doctest.h> // a no-op after the test file's own include, as usual

#ifdef DOCTEST_CONFIG_DISABLE
// doctest compiled out: so is every forksafe assertion, and an isolated
// test case is a disabled test case.
#define FORKSAFE_ISOLATED_TEST_CASE(name, deadline) DOCTEST_TEST_CASE(name)
#define FORKSAFE_DETAIL_DISABLED(statement, expected) static_cast<void>(0)
#define FORKSAFE_WARN_EXITS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_CHECK_EXITS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_REQUIRE_EXITS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_WARN_SIGNALED FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_CHECK_SIGNALED FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_REQUIRE_SIGNALED FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_WARN_DEATH FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_CHECK_DEATH FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_REQUIRE_DEATH FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_WARN_HANGS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_CHECK_HANGS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_REQUIRE_HANGS FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_WARN_FINISHES_WITHIN FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_CHECK_FINISHES_WITHIN FORKSAFE_DETAIL_DISABLED
#define FORKSAFE_REQUIRE_FINISHES_WITHIN FORKSAFE_DETAIL_DISABLED
#else

#include "detail/config.hpp"
#include "detail/doctest_listener.hpp"
#include "detail/isolated_report.hpp"
#include "fork_call.hpp"

#include <array>     // pipe and poll arrays
#include <atomic>    // the default deadline
#include <cerrno>    // EINTR, EAGAIN
#include <chrono>    // deadlines
#include <csignal>   // SIGINT, SIGTERM, sigaction
#include <cstdint>   // std::uint64_t: counts
#include <exception> // std::exception: what an isolated body throws
#include <iostream>  // std::cout: the stream doctest's reporters write to by default
#include <regex>     // FORKSAFE_CHECK_DEATH's pattern
#include <stdexcept> // std::runtime_error: an isolated body's exception, in the parent
#include <string>    // messages
#include <typeinfo>  // typeid: the type of what an isolated body threw
#include <utility>   // std::move

#include <fcntl.h>  // O_CLOEXEC, O_NONBLOCK
#include <poll.h>   // poll: an isolated child's records and its end
#include <unistd.h> // pipe2, read

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::testing {

/// How a statement run in a child ended, as the macros judge it.
struct statement_outcome {
  /// The ways a statement's child can end.
  enum class kind : unsigned char {
    returned,    ///< the statement returned normally
    exited,      ///< it ended the process: exit code `value`
    signaled,    ///< a signal killed it: `value`
    timed_out,   ///< it ran past its deadline and was killed
    threw,       ///< an exception escaped it: `detail`
    lost,        ///< it ended, but someone else reaped it: how is unknown
    not_started, ///< no child was made: `detail` says why
    malformed,   ///< what came back did not check out: `detail`
  };
  kind how = kind::lost; ///< how it ended
  int value = 0;         ///< the exit code (exited) or the signal (signaled)
  std::string detail{};  ///< threw: the type and what(); not_started, malformed: why
  /// From the fork to the outcome, as the parent saw it.
  std::chrono::nanoseconds elapsed{0};
  /// The deadline it was given.
  std::chrono::nanoseconds deadline{0};
  /// What it wrote to stdout and stderr (the last capture_limit bytes of each).
  captured_output output{};

  /// "returned normally", "exited with code 3", "was killed by SIGSEGV",
  /// "did not finish within 100 ms (killed by SIGKILL)", ...
  [[nodiscard]] std::string describe() const {
    switch (how) {
    case kind::returned: return "returned normally after " + ms(elapsed);
    case kind::exited:
      return "exited with code " + std::to_string(value) +
             (value == child_error::undelivered_exit_code
                  ? " (forksafe's code for a child that returned but could not report it: did the statement "
                    "close every descriptor?)"
                  : "");
    case kind::signaled: return "was killed by " + forksafe::detail::signal_name(value);
    case kind::timed_out: return "did not finish within " + ms(deadline) + " (killed by SIGKILL)";
    case kind::threw: return "threw " + detail;
    case kind::lost: return "ended, but was reaped by someone else (SIGCHLD ignored or a foreign waitpid)";
    case kind::not_started: return "was never run: " + detail;
    case kind::malformed: return "sent back a malformed report: " + detail;
    }
    return "ended in an unknown way";
  }

  /// `d` as "100 ms".
  static std::string ms(std::chrono::nanoseconds d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
  }
};

namespace detail {
inline std::atomic<long long>& default_deadline_ms() {
  static std::atomic<long long> ms{60'000};
  return ms;
}
} // namespace detail

/// The deadline of FORKSAFE_*_EXITS, _SIGNALED and _DEATH: a statement that
/// has not ended by then is killed and the assertion fails as timed out.
/// 60 s unless set; it only turns a hang into a failure.
inline void set_death_test_deadline(std::chrono::milliseconds d) noexcept { detail::default_deadline_ms() = d.count(); }
[[nodiscard]] inline std::chrono::milliseconds death_test_deadline() noexcept {
  return std::chrono::milliseconds(detail::default_deadline_ms().load());
}

namespace detail {

/// In a child, first: doctest's reporters print nothing there (the parent
/// reports). The console reporter honours the test case's no_output flag,
/// set here in the child's copy only; a report written to a file (--out) is
/// muted in the child too.
inline void silence_doctest_in_child() noexcept {
  const doctest::ContextOptions* options = doctest::getContextOptions();
  if (options == nullptr) return;
  if (options->currentTest != nullptr) {
    // The test case object lives in doctest's registry, not in read-only
    // storage; this child's copy of it is changed, no other process's.
    const_cast<doctest::TestCaseData*>(static_cast<const doctest::TestCaseData*>(options->currentTest))->m_no_output =
        true;
  }
  if (options->cout != nullptr && options->cout != &std::cout) options->cout->rdbuf(nullptr);
}

/// In a death test's child: SIGINT and SIGTERM back at SIG_DFL unless
/// ignored. With the crash signals, which fork_call resets itself, these are
/// the signals doctest handles, so none of its handlers runs in the child.
/// (Resetting every signal, as reset_signal_handlers does, costs 62 system
/// calls, a twentieth of a death test.)
inline void default_termination_handlers() noexcept {
  for (const int sig : {SIGINT, SIGTERM}) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    struct sigaction old {};
    if (::sigaction(sig, &dfl, &old) == 0 && old.sa_handler == SIG_IGN) ::sigaction(sig, &old, nullptr);
  }
}

} // namespace detail

/// Runs `statement()` in a child, as the macros do: fork_call with the
/// deadline as its timeout, the child in its own process group (killed with
/// it at the deadline), the handlers of the crash signals, SIGINT and SIGTERM
/// reset (doctest's are among them; other handlers stay, as they would in a
/// plain fork), stdout and stderr captured (the last `capture_limit` bytes of
/// each). Returns how it ended.
/// Throws std::system_error if no child could be made (EMFILE, EAGAIN).
template <class Statement>
[[nodiscard]] statement_outcome run_statement(Statement&& statement, std::chrono::nanoseconds deadline,
                                              std::size_t capture_limit = std::size_t{64} * 1024) {
  fork_options options;
  options.timeout = deadline;
  options.own_process_group = true;
  options.capture_output = true;
  options.capture_limit = capture_limit;
  statement_outcome o;
  o.deadline = deadline;
  const auto started = std::chrono::steady_clock::now();
  auto result = fork_call(options, [&statement] {
    detail::silence_doctest_in_child();
    detail::default_termination_handlers();
    statement();
  });
  try {
    result.get();
    o.how = statement_outcome::kind::returned;
  } catch (const child_error& e) {
    using why = child_error::reason;
    switch (e.why()) {
    case why::exited: o.how = statement_outcome::kind::exited; break;
    case why::signaled: o.how = statement_outcome::kind::signaled; break;
    case why::timed_out: o.how = statement_outcome::kind::timed_out; break;
    case why::threw: o.how = statement_outcome::kind::threw; break;
    case why::lost: o.how = statement_outcome::kind::lost; break;
    case why::prepare_timed_out:
    case why::cancelled: o.how = statement_outcome::kind::not_started; break;
    case why::malformed: o.how = statement_outcome::kind::malformed; break;
    }
    o.value = e.exited() ? e.exit_code() : e.signal_number();
    o.detail = e.threw() ? e.exception_type() + (e.exception_what().empty() ? "" : ": " + e.exception_what())
                         : std::string(e.what());
  }
  o.elapsed = std::chrono::steady_clock::now() - started;
  o.output = result.output();
  return o;
}

namespace detail {

/// What a macro expects, and whether an outcome meets it.
struct expectation {
  enum class kind : unsigned char { exits, signaled, dies, hangs, finishes } what;
  int value = 0;
  std::string pattern{};
  std::chrono::nanoseconds duration{0};

  /// The pattern as a regex; the last one compiled is kept per thread,
  /// since a death test in a loop asks for the same one each time.
  [[nodiscard]] const std::regex& compiled() const {
    thread_local std::string source;
    thread_local std::regex re;
    if (source != pattern || source.empty()) {
      re = std::regex(pattern);
      source = pattern;
    }
    return re;
  }

  [[nodiscard]] std::chrono::nanoseconds deadline() const {
    return what == kind::hangs || what == kind::finishes ? duration : std::chrono::nanoseconds(death_test_deadline());
  }

  [[nodiscard]] std::string describe() const {
    switch (what) {
    case kind::exits: return "exit code " + std::to_string(value);
    case kind::signaled: return "killed by " + forksafe::detail::signal_name(value);
    case kind::dies:
      return "an abnormal end (a non-zero exit code or a signal)" +
             (pattern.empty() ? std::string() : " with stderr matching \"" + pattern + "\"");
    case kind::hangs: return "still running after " + statement_outcome::ms(duration);
    case kind::finishes: return "a normal return within " + statement_outcome::ms(duration);
    }
    return "";
  }

  // Throws std::regex_error for a pattern that is not a regular expression.
  [[nodiscard]] bool met_by(const statement_outcome& o) const {
    using k = statement_outcome::kind;
    switch (what) {
    case kind::exits: return o.how == k::exited && o.value == value;
    case kind::signaled: return o.how == k::signaled && o.value == value;
    case kind::dies:
      return ((o.how == k::exited && o.value != 0) || o.how == k::signaled) &&
             (pattern.empty() || std::regex_search(o.output.err, compiled()));
    case kind::hangs: return o.how == k::timed_out;
    case kind::finishes: return o.how == k::returned;
    }
    return false;
  }
};

/// The last `bound` bytes of a captured stream, for a failure message.
inline std::string shown(const std::string& name, const std::string& text, std::uint64_t total) {
  constexpr std::size_t bound = 4096;
  if (total == 0) return "";
  std::string s = "\n  " + name;
  const std::size_t from = text.size() > bound ? text.size() - bound : 0;
  if (from != 0 || total > text.size())
    s += " (the last " + std::to_string(text.size() - from) + " of " + std::to_string(total) + " bytes)";
  return s + ":\n" + text.substr(from);
}

/// Runs the statement and reports the assertion to doctest at `file`:`line`.
template <class Statement>
void check_statement(doctest::assertType::Enum level, const char* file, int line, const char* text,
                     const expectation& expected, Statement&& statement) {
  doctest::detail::ResultBuilder rb(level, file, line, text);
  std::string message;
  try {
    const statement_outcome o = run_statement(statement, expected.deadline());
    rb.m_failed = !expected.met_by(o);
    if (rb.m_failed || doctest::getContextOptions()->success) {
      message = "expected " + expected.describe() + ", got: the statement " + o.describe() +
                shown("stderr", o.output.err, o.output.err_bytes);
      if (rb.m_failed) message += shown("stdout", o.output.out, o.output.out_bytes);
    }
  } catch (const std::exception& e) {
    rb.m_failed = true;
    message = std::string("expected ") + expected.describe() + ", but it could not be judged: " + e.what();
  }
  if (rb.m_failed || doctest::getContextOptions()->success) rb.m_decomp = message.c_str();
  if (rb.log()) DOCTEST_BREAK_INTO_DEBUGGER();
  rb.react();
}

} // namespace detail

namespace detail {

/// FORKSAFE_ISOLATED_TEST_CASE's test case: runs `body` in a child (through
/// fork_call: registry, own process group, handlers reset, _exit), relays
/// its records while it runs and replays them, then reports how the child
/// ended if it did not end by returning.
inline void run_isolated(void (*body)(), std::chrono::nanoseconds deadline, const char* file, int line) {
  using record = forksafe::detail::isolated_record;
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
    forksafe::detail::throw_errno(errno, "forksafe: FORKSAFE_ISOLATED_TEST_CASE could not make its pipe (pipe2)");
  }
  forksafe::detail::unique_fd reader(fds[0]);
  forksafe::detail::unique_fd writer(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  const bool success = doctest::getContextOptions()->success;
  fork_options options;
  options.timeout = deadline;
  options.own_process_group = true;
  options.reset_signal_handlers = true;
  const int to_parent = writer.get();
  auto result = fork_call(options, [body, to_parent, success] {
    silence_doctest_in_child();
    isolated_child() = isolated_child_state{to_parent, ::getpid(), success, 0};
    record last;
    try {
      body();
    } catch (const doctest::detail::TestFailureException&) { // a REQUIRE failed: reported already
    } catch (const std::exception& e) {
      last.what = record::kind::threw;
      last.text = forksafe::detail::demangle(typeid(e).name());
      last.decomposition = e.what();
      send_isolated(last);
    } catch (...) {
      last.what = record::kind::threw;
      last.text = "an exception of unknown type";
      send_isolated(last);
    }
    send_isolated(record{});
  });
  writer.reset();
  std::string data;
  bool hung_up = false;
  for (;;) {
    const auto left = result.deadline() - std::chrono::steady_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
    std::array<pollfd, 2> p{{{result.native_handle(), POLLIN, 0}, {hung_up ? -1 : reader.get(), POLLIN, 0}}};
    (void)::poll(p.data(), p.size(), static_cast<int>(ms < 0 ? 0 : (ms > 1000 ? 1000 : ms + 1)));
    drain_records(reader.get(), data, hung_up);
    if (result.ready()) break;
  }
  drain_records(reader.get(), data, hung_up); // all the child wrote is there now
  forksafe::detail::isolated_record_reader in(data.data(), data.size());
  bool ended = false;
  std::string threw;
  while (auto r = in.next()) {
    if (r->what == record::kind::end) ended = true;
    if (r->what == record::kind::threw) threw = r->text + (r->decomposition.empty() ? "" : ": " + r->decomposition);
    replay(*r, file, line);
  }
  try {
    result.get();
  } catch (const child_error& e) {
    const std::string how = e.timed_out() ? "the test case did not finish within " + statement_outcome::ms(deadline) +
                                                " and its child was killed by SIGKILL"
                                          : "the test case's " + std::string(e.what()) +
                                                (e.exit_code() == child_error::undelivered_exit_code
                                                     ? " (forksafe's code for a child that could not report: did "
                                                       "the body close its descriptors?)"
                                                     : "");
    DOCTEST_ADD_FAIL_CHECK_AT(file, line, ("FORKSAFE_ISOLATED_TEST_CASE: " + how));
    return;
  }
  if (in.garbled() || !ended) {
    DOCTEST_ADD_FAIL_CHECK_AT(file, line,
                              "FORKSAFE_ISOLATED_TEST_CASE: the child's report was cut short or garbled "
                              "(the body closed its descriptor, or wrote over 64 MiB of failures)");
  }
  if (!threw.empty()) throw std::runtime_error(threw);
}

} // namespace detail
} // namespace forksafe::testing

DOCTEST_REGISTER_LISTENER("forksafe-isolated", 0, ::forksafe::testing::detail::isolated_listener);

// `body` names a function: it cannot be parenthesised.
#define FORKSAFE_DETAIL_ISOLATED(body, name, deadline)                                                                 \
  static void body(); /* NOLINT(bugprone-macro-parentheses) */                                                         \
  DOCTEST_TEST_CASE(name) {                                                                                            \
    ::forksafe::testing::detail::run_isolated((body), std::chrono::duration_cast<std::chrono::nanoseconds>(deadline),  \
                                              __FILE__, __LINE__);                                                     \
  }                                                                                                                    \
  static void body() /* NOLINT(bugprone-macro-parentheses) */

/// A test case whose body runs in a child: FORKSAFE_ISOLATED_TEST_CASE("name", 5s) { ... }.
#define FORKSAFE_ISOLATED_TEST_CASE(name, deadline)                                                                    \
  FORKSAFE_DETAIL_ISOLATED(DOCTEST_ANONYMOUS(FORKSAFE_ISOLATED_BODY_), name, deadline)

// clang-format off
#define FORKSAFE_DETAIL_STATEMENT(level, text, expected, statement)                                        \
  ::forksafe::testing::detail::check_statement(::doctest::assertType::level, __FILE__, __LINE__, text,      \
                                               expected, [&]() { statement; })
#define FORKSAFE_DETAIL_EXPECT(k, ...) ::forksafe::testing::detail::expectation{                           \
    ::forksafe::testing::detail::expectation::kind::k, __VA_ARGS__}
#define FORKSAFE_DETAIL_FOR(duration) std::chrono::duration_cast<std::chrono::nanoseconds>(duration)
// Each public macro spells its own text: its arguments as written (SIGTERM, not 15).
#define FORKSAFE_DETAIL_EXITS(level, name, statement, code)                                                \
  FORKSAFE_DETAIL_STATEMENT(level, name, FORKSAFE_DETAIL_EXPECT(exits, (code)), statement)
#define FORKSAFE_DETAIL_SIGNALED(level, name, statement, signo)                                            \
  FORKSAFE_DETAIL_STATEMENT(level, name, FORKSAFE_DETAIL_EXPECT(signaled, (signo)), statement)
#define FORKSAFE_DETAIL_DEATH(level, name, statement, regex)                                               \
  FORKSAFE_DETAIL_STATEMENT(level, name, FORKSAFE_DETAIL_EXPECT(dies, 0, (regex)), statement)
#define FORKSAFE_DETAIL_HANGS(level, name, statement, duration)                                            \
  FORKSAFE_DETAIL_STATEMENT(level, name, FORKSAFE_DETAIL_EXPECT(hangs, 0, {}, FORKSAFE_DETAIL_FOR(duration)), statement)
#define FORKSAFE_DETAIL_FINISHES(level, name, statement, duration)                                         \
  FORKSAFE_DETAIL_STATEMENT(level, name, FORKSAFE_DETAIL_EXPECT(finishes, 0, {}, FORKSAFE_DETAIL_FOR(duration)), statement)
// clang-format on

#define FORKSAFE_WARN_EXITS(statement, code)                                                                           \
  FORKSAFE_DETAIL_EXITS(DT_WARN, "FORKSAFE_WARN_EXITS( " #statement ", " #code " )", statement, code)
#define FORKSAFE_CHECK_EXITS(statement, code)                                                                          \
  FORKSAFE_DETAIL_EXITS(DT_CHECK, "FORKSAFE_CHECK_EXITS( " #statement ", " #code " )", statement, code)
#define FORKSAFE_REQUIRE_EXITS(statement, code)                                                                        \
  FORKSAFE_DETAIL_EXITS(DT_REQUIRE, "FORKSAFE_REQUIRE_EXITS( " #statement ", " #code " )", statement, code)

#define FORKSAFE_WARN_SIGNALED(statement, signo)                                                                       \
  FORKSAFE_DETAIL_SIGNALED(DT_WARN, "FORKSAFE_WARN_SIGNALED( " #statement ", " #signo " )", statement, signo)
#define FORKSAFE_CHECK_SIGNALED(statement, signo)                                                                      \
  FORKSAFE_DETAIL_SIGNALED(DT_CHECK, "FORKSAFE_CHECK_SIGNALED( " #statement ", " #signo " )", statement, signo)
#define FORKSAFE_REQUIRE_SIGNALED(statement, signo)                                                                    \
  FORKSAFE_DETAIL_SIGNALED(DT_REQUIRE, "FORKSAFE_REQUIRE_SIGNALED( " #statement ", " #signo " )", statement, signo)

#define FORKSAFE_WARN_DEATH(statement, regex)                                                                          \
  FORKSAFE_DETAIL_DEATH(DT_WARN, "FORKSAFE_WARN_DEATH( " #statement ", " #regex " )", statement, regex)
#define FORKSAFE_CHECK_DEATH(statement, regex)                                                                         \
  FORKSAFE_DETAIL_DEATH(DT_CHECK, "FORKSAFE_CHECK_DEATH( " #statement ", " #regex " )", statement, regex)
#define FORKSAFE_REQUIRE_DEATH(statement, regex)                                                                       \
  FORKSAFE_DETAIL_DEATH(DT_REQUIRE, "FORKSAFE_REQUIRE_DEATH( " #statement ", " #regex " )", statement, regex)

#define FORKSAFE_WARN_HANGS(statement, duration)                                                                       \
  FORKSAFE_DETAIL_HANGS(DT_WARN, "FORKSAFE_WARN_HANGS( " #statement ", " #duration " )", statement, duration)
#define FORKSAFE_CHECK_HANGS(statement, duration)                                                                      \
  FORKSAFE_DETAIL_HANGS(DT_CHECK, "FORKSAFE_CHECK_HANGS( " #statement ", " #duration " )", statement, duration)
#define FORKSAFE_REQUIRE_HANGS(statement, duration)                                                                    \
  FORKSAFE_DETAIL_HANGS(DT_REQUIRE, "FORKSAFE_REQUIRE_HANGS( " #statement ", " #duration " )", statement, duration)

#define FORKSAFE_WARN_FINISHES_WITHIN(statement, duration)                                                             \
  FORKSAFE_DETAIL_FINISHES(DT_WARN, "FORKSAFE_WARN_FINISHES_WITHIN( " #statement ", " #duration " )", statement,       \
                           duration)
#define FORKSAFE_CHECK_FINISHES_WITHIN(statement, duration)                                                            \
  FORKSAFE_DETAIL_FINISHES(DT_CHECK, "FORKSAFE_CHECK_FINISHES_WITHIN( " #statement ", " #duration " )", statement,     \
                           duration)
#define FORKSAFE_REQUIRE_FINISHES_WITHIN(statement, duration)                                                          \
  FORKSAFE_DETAIL_FINISHES(DT_REQUIRE, "FORKSAFE_REQUIRE_FINISHES_WITHIN( " #statement ", " #duration " )", statement, \
                           duration)

#endif // DOCTEST_CONFIG_DISABLE
#endif // FORKSAFE_DOCTEST_HPP
