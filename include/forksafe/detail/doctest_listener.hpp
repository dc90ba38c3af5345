// SPDX-License-Identifier: MIT
//
// forksafe/detail/doctest_listener.hpp: the doctest side of an isolated test
// case (forksafe/doctest.hpp): the listener that, in the child, sends every
// assertion, message and subcase to the parent, and the replay that logs
// them in the parent, through doctest's own result and message builders, so
// every reporter sees each once, with its file and line.

#ifndef FORKSAFE_DETAIL_DOCTEST_LISTENER_HPP
#define FORKSAFE_DETAIL_DOCTEST_LISTENER_HPP

#include "config.hpp"
#include "isolated_report.hpp"

#include <array>   // the read buffer
#include <cerrno>  // EINTR
#include <cstddef> // std::size_t
#include <cstdint> // std::uint64_t: counts
#include <sstream> // doctest's contexts, stringified
#include <string>  // record fields

#include <sys/types.h> // pid_t
#include <unistd.h>    // getpid, read

#include <doctest/doctest.h>

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::testing::detail {

/// An isolated test case's child: where its records go. Set in that child
/// only, so a process it forks in turn (a death test inside it) reports
/// nothing through it.
struct isolated_child_state {
  int fd = -1;
  pid_t pid = -1;
  bool success = false;     // doctest -s: every passed assertion is reported
  std::uint64_t passes = 0; // passed assertions not sent yet
};
inline isolated_child_state& isolated_child() noexcept {
  static isolated_child_state state;
  return state;
}
inline bool in_isolated_child() noexcept { return isolated_child().fd >= 0 && isolated_child().pid == ::getpid(); }

/// How many passed assertions an isolated child counts before it sends the count.
inline constexpr std::uint64_t pass_batch = 256;

inline void send_passes() noexcept {
  isolated_child_state& c = isolated_child();
  if (c.passes == 0) return;
  forksafe::detail::isolated_record p;
  p.what = forksafe::detail::isolated_record::kind::passes;
  p.count = c.passes;
  c.passes = 0;
  (void)forksafe::detail::isolated_record_writer::send(c.fd, p);
}

/// Sends `r`, after the count of the passed assertions that came before it.
inline void send_isolated(const forksafe::detail::isolated_record& r) noexcept {
  send_passes();
  (void)forksafe::detail::isolated_record_writer::send(isolated_child().fd, r);
}

inline std::string active_contexts() {
  std::string out;
  const int n = doctest::IReporter::get_num_active_contexts();
  const doctest::IContextScope* const* contexts = doctest::IReporter::get_active_contexts();
  for (int i = 0; i < n; ++i) {
    std::ostringstream text;
    contexts[i]->stringify(&text);
    out += (out.empty() ? "" : "\n") + text.str();
  }
  return out;
}

/// A doctest listener, registered by this header: in an isolated test
/// case's child it sends every assertion, message and subcase to the
/// parent; everywhere else it does nothing.
struct isolated_listener final : doctest::IReporter {
  explicit isolated_listener(const doctest::ContextOptions& /*unused*/) noexcept {}
  void report_query(const doctest::QueryData& /*unused*/) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& /*unused*/) override {}
  void test_case_start(const doctest::TestCaseData& /*unused*/) override {}
  void test_case_reenter(const doctest::TestCaseData& /*unused*/) override {}
  void test_case_end(const doctest::CurrentTestCaseStats& /*unused*/) override {}
  void test_case_exception(const doctest::TestCaseException& /*unused*/) override {}
  void subcase_end() override {}
  void test_case_skipped(const doctest::TestCaseData& /*unused*/) override {}

  void subcase_start(const doctest::SubcaseSignature& s) override {
    if (!in_isolated_child()) return;
    forksafe::detail::isolated_record r;
    r.what = forksafe::detail::isolated_record::kind::subcase;
    r.file = s.m_file;
    r.line = s.m_line;
    r.text = s.m_name.c_str();
    send_isolated(r);
  }

  void log_assert(const doctest::AssertData& a) override {
    if (!in_isolated_child()) return;
    if (!a.m_failed && !isolated_child().success) {
      // Sent in batches: a write per passed assertion would cost more than
      // the assertion. A crash loses at most the last batch's count.
      if (++isolated_child().passes == pass_batch) send_passes();
      return;
    }
    forksafe::detail::isolated_record r;
    r.what = forksafe::detail::isolated_record::kind::assertion;
    r.severity = static_cast<std::uint32_t>(a.m_at);
    r.file = a.m_file;
    r.line = a.m_line;
    r.failed = a.m_failed ? 1 : 0;
    r.threw_exception = a.m_threw ? 1 : 0;
    r.threw_as = a.m_threw_as ? 1 : 0;
    r.expression = a.m_expr;
    r.decomposition = a.m_decomp.c_str();
    // log() has quoted it for the reporters; the parent's log() quotes again.
    r.exception = a.m_exception.c_str();
    if (r.exception.size() >= 2 && r.exception.front() == '"' && r.exception.back() == '"') {
      r.exception = r.exception.substr(1, r.exception.size() - 2);
    }
    r.exception_type = a.m_exception_type != nullptr ? a.m_exception_type : "";
    r.exception_string = a.m_exception_string.c_str();
    if (a.m_failed) r.contexts = active_contexts();
    send_isolated(r);
  }

  void log_message(const doctest::MessageData& m) override {
    if (!in_isolated_child()) return;
    forksafe::detail::isolated_record r;
    r.what = forksafe::detail::isolated_record::kind::message;
    r.severity = static_cast<std::uint32_t>(m.m_severity);
    r.file = m.m_file;
    r.line = m.m_line;
    r.text = m.m_string.c_str();
    r.contexts = active_contexts();
    send_isolated(r);
  }
};

/// An assertion or a message, logged in the parent as it was in the child.
inline void replay_reported(const forksafe::detail::isolated_record& r) {
  const auto at = static_cast<doctest::assertType::Enum>(r.severity);
  if (r.what == forksafe::detail::isolated_record::kind::message) {
    doctest::detail::MessageBuilder mb(r.file.c_str(), r.line, at);
    mb* r.text;
    if (mb.log()) DOCTEST_BREAK_INTO_DEBUGGER();
    mb.react();
    return;
  }
  // The parent's log() judges exception assertions again from these
  // fields; a passed one is given its own exception text to compare with.
  const std::string& expected = r.failed != 0 ? r.exception_string : r.exception;
  doctest::detail::ResultBuilder rb(at, r.file.c_str(), r.line, r.expression.c_str(), r.exception_type.c_str(),
                                    doctest::String(expected.c_str()));
  rb.m_failed = r.failed != 0;
  rb.m_threw = r.threw_exception != 0;
  rb.m_threw_as = r.threw_as != 0;
  rb.m_exception = r.exception.c_str();
  rb.m_decomp = r.decomposition.c_str();
  if (rb.log()) DOCTEST_BREAK_INTO_DEBUGGER();
  rb.react();
}

/// Replays one record through doctest in the parent, as if the assertion or
/// message had happened here: counted once, reported by every reporter, a
/// failed REQUIRE ending the test case (it ended the child's run too).
inline void replay(const forksafe::detail::isolated_record& r, const char* file, int line) {
  using kind = forksafe::detail::isolated_record::kind;
  switch (r.what) {
  case kind::assertion:
  case kind::message:
    if (r.contexts.empty()) {
      replay_reported(r);
    } else {
      DOCTEST_INFO(r.contexts); // what INFO and CAPTURE held in the child, shown as doctest shows it
      replay_reported(r);
    }
    return;
  case kind::passes: {
    // Counted one by one (doctest has no other way); a child claiming more
    // than it could have made is capped, not looped over for ever.
    constexpr std::uint64_t cap = std::uint64_t{1} << 24;
    for (std::uint64_t i = 0; i < (r.count < cap ? r.count : cap); ++i) {
      doctest::detail::ResultBuilder rb(doctest::assertType::DT_CHECK, file, line,
                                        "an assertion that passed in the child");
      rb.m_failed = false;
      (void)rb.log();
    }
    return;
  }
  case kind::subcase:
    DOCTEST_ADD_FAIL_CHECK_AT(r.file.c_str(), r.line,
                              ("SUBCASE(\"" + r.text +
                               "\") in a FORKSAFE_ISOLATED_TEST_CASE: not supported (the child runs the test case "
                               "once, so only its first path would run)"));
    return;
  case kind::threw:
  case kind::end: return;
  }
}

/// Reads what the records pipe holds now (at most 1 MiB per call).
inline void drain_records(int fd, std::string& into, bool& hung_up) {
  constexpr std::size_t bound = std::size_t{64} << 20; // 64 MiB: beyond it, the report is cut
  std::array<char, std::size_t{64} * 1024> buf;        // NOLINT(cppcoreguidelines-pro-type-member-init)
  for (std::size_t budget = std::size_t{1} << 20; budget != 0;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) hung_up = true;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    const auto got = static_cast<std::size_t>(n);
    // Past the bound, the rest is dropped: the report ends cut, and says so.
    if (into.size() < bound) into.append(buf.data(), got < bound - into.size() ? got : bound - into.size());
    budget -= got < budget ? got : budget;
  }
}

} // namespace forksafe::testing::detail

#endif // FORKSAFE_DETAIL_DOCTEST_LISTENER_HPP
