// SPDX-License-Identifier: MIT
//
// forksafe/child_error.hpp: how a child ended without delivering a value,
// or why no child was made; thrown by process_result::get() for fork_call
// and process_pool tasks alike.
//
// Defines:
//   captured_output  what a child wrote to stdout and stderr (fork_options::capture_output)
//   child_error      the exception: why(), one predicate per reason, the details.

#ifndef FORKSAFE_CHILD_ERROR_HPP
#define FORKSAFE_CHILD_ERROR_HPP

#include "detail/config.hpp"
#include "detail/signal_names.hpp"

#include <chrono>      // how long a timed-out child ran
#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t: byte counts
#include <memory>      // std::shared_ptr: copies never throw
#include <stdexcept>   // std::runtime_error
#include <string>      // the texts
#include <sys/types.h> // pid_t
#include <utility>     // std::move

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// What a fork_call child wrote to its standard output and standard error,
/// when fork_options::capture_output asked for it: the last
/// fork_options::capture_limit bytes of each (the end of a stream is where a
/// crash or an abort leaves its message), and how many bytes it wrote in
/// all. Bytes as written, not necessarily text. Empty without capture.
struct captured_output {
  std::string out{};           ///< the tail of what the child wrote to stdout
  std::string err{};           ///< the tail of what the child wrote to stderr
  std::uint64_t out_bytes = 0; ///< how many bytes it wrote to stdout in all
  std::uint64_t err_bytes = 0; ///< how many bytes it wrote to stderr in all
  bool captured = false;       ///< whether capture was on for this child

  /// Whether the start of stdout was dropped to keep within the limit.
  [[nodiscard]] bool out_truncated() const noexcept { return out_bytes > out.size(); }
  /// Whether the start of stderr was dropped to keep within the limit.
  [[nodiscard]] bool err_truncated() const noexcept { return err_bytes > err.size(); }
};

namespace detail {
struct child_error_access;
}

/// How a child ended without delivering a value; thrown by
/// process_result::get(). Copying never throws (the texts are shared).
///
/// | why()     | the child...                                            | accessors                  |
/// |-----------|---------------------------------------------------------|----------------------------|
/// | exited    | ended with exit code N without a result (_exit, exit)   | exit_code()                |
/// | signaled  | was killed by a signal forksafe did not send for a      | signal_number(),           |
/// |           | timeout (a crash, kill(), the OOM killer)               | signal_name()              |
/// | threw     | let an exception escape the callable                    | exception_type(),          |
/// |           |                                                         | exception_what(),          |
/// |           |                                                         | what_truncated()           |
/// | timed_out | ran past fork_options::timeout; forksafe killed it      | signal_number() (SIGKILL)  |
/// | lost      | ended without a result and was reaped by someone else   | none                       |
/// |           | (SIGCHLD ignored, a foreign waitpid), so how is unknown |                            |
/// | prepare_  | was never forked: the fork could not be prepared within | blocker(); pid() is -1     |
/// | timed_out | the timeout (another thread held a lock the fork waits  |                            |
/// |           | for); fork_options::timeout counts from the call        |                            |
/// | cancelled | was never run: a pool task still queued when the pool   | pid() is -1                |
/// |           | shut down past its deadline                             |                            |
/// | malformed | delivered a result the parent could not read: a frame   | defect() says what was     |
/// |           | cut short, oversized or garbled, a length beyond what   | wrong with it              |
/// |           | arrived, a scribbled result mapping                     |                            |
///
/// what() reads "child 4242 was killed by SIGSEGV", "child 4242 exited with
/// code 3 without a result", "child 4242 threw std::runtime_error: boom",
/// "child 4242 timed out after running 480 ms and was killed by SIGKILL",
/// "child 4242 ended without a result and was reaped by someone else
/// (SIGCHLD ignored or a foreign waitpid)", "no child was forked: the fork
/// could not be prepared within 500 ms; held back by ...", "the task never
/// ran: it was still queued when the pool shut down" or "child 4242 delivered
/// a malformed result: std::vector<int>: a count of 9223372036854775808
/// elements, but only 12 bytes arrived".
class child_error : public std::runtime_error {
public:
  /// The way the child ended; see the table in the class comment.
  enum class reason : unsigned char {
    exited,
    signaled,
    threw,
    timed_out,
    lost,
    prepare_timed_out,
    cancelled,
    malformed
  };

  /// exception_what() keeps at most this many bytes of what(), cut at a UTF-8
  /// character boundary; what_truncated() says whether it was cut.
  static constexpr std::size_t max_what_length = 1024;
  /// The exception's type travels as its mangled name, cut to this many bytes
  /// (a longer one is shown cut and mangled), and is demangled in the parent.
  static constexpr std::size_t max_type_name_length = 256;
  /// The exit code of a child that could not write its result (the callable
  /// closed the result descriptor, say), or of a process_pool worker that
  /// could not map a large result's memory: reported as exited() with it.
  static constexpr int undelivered_exit_code = 126;

  /// Everything a child_error carries; forksafe fills it in.
  struct details {
    /// How the child ended: why().
    reason why = reason::lost;
    /// The child's process id, -1 when none was forked: pid().
    pid_t pid = -1;
    int value = 0; ///< exit code (exited) or signal number (signaled, timed_out)
    /// threw: the type of what was thrown, demangled: exception_type().
    std::string exception_type{};
    /// threw: its what(), at most max_what_length bytes: exception_what().
    std::string exception_what{};
    /// threw: whether exception_what was cut: what_truncated().
    bool what_truncated = false;
    /// prepare_timed_out: what held the fork back (the registry's report).
    std::string blocker{};
    /// timed_out: how long the child ran before it was killed, and how long
    /// the fork waited to be prepared before it (both count toward the
    /// timeout); negative when unknown.
    std::chrono::nanoseconds ran_for{-1};
    /// timed_out: how long the fork waited to be prepared (see ran_for).
    std::chrono::nanoseconds prepare_time{-1};
    /// malformed: the type that was expected and what was wrong with what arrived.
    std::string defect{};
    /// What the child wrote, with fork_options::capture_output: output().
    captured_output output{};
  };

  /// Builds the error and its what() sentence. Public so that code wrapping
  /// forksafe (and its tests) can make one; forksafe itself is the usual source.
  /// Throws std::bad_alloc.
  explicit child_error(details d)
      : std::runtime_error(describe(d)), details_(std::make_shared<const details>(std::move(d))) {}

  /// How the child ended; the predicates below test one reason each.
  [[nodiscard]] reason why() const noexcept { return details_->why; }
  /// The child's process id; for a process_pool task, its worker's. Do not
  /// signal it: the process may have been reaped and the number reused, or
  /// (a worker whose task threw) it may be running other tasks.
  [[nodiscard]] pid_t pid() const noexcept { return details_->pid; }

  /// The child ended with an exit code, without a result: exit_code().
  [[nodiscard]] bool exited() const noexcept { return why() == reason::exited; }
  /// A signal forksafe did not send killed the child: signal_number(), signal_name().
  [[nodiscard]] bool signaled() const noexcept { return why() == reason::signaled; }
  /// An exception escaped the callable: exception_type(), exception_what().
  [[nodiscard]] bool threw() const noexcept { return why() == reason::threw; }
  /// The child ran past its timeout and forksafe killed it: signal_number().
  [[nodiscard]] bool timed_out() const noexcept { return why() == reason::timed_out; }
  /// The child ended without a result and someone else reaped it: how is unknown.
  [[nodiscard]] bool lost() const noexcept { return why() == reason::lost; }
  /// No child was forked: the fork could not be prepared in time; blocker().
  [[nodiscard]] bool prepare_timed_out() const noexcept { return why() == reason::prepare_timed_out; }
  /// The pool task never ran: still queued when the pool shut down.
  [[nodiscard]] bool cancelled() const noexcept { return why() == reason::cancelled; }
  /// The child delivered a result the parent could not read: defect().
  [[nodiscard]] bool malformed() const noexcept { return why() == reason::malformed; }

  /// malformed(): the expected type and what was wrong with the bytes that
  /// arrived instead ("std::string: a length of 4294967296 bytes, but 40
  /// bytes arrived"); "" otherwise.
  [[nodiscard]] const std::string& defect() const noexcept { return details_->defect; }

  /// prepare_timed_out(): what held the fork back (names of registry
  /// entries, a quiesce lock's address and holder); "" otherwise.
  [[nodiscard]] const std::string& blocker() const noexcept { return details_->blocker; }

  /// The exit code when exited(), else -1.
  [[nodiscard]] int exit_code() const noexcept { return exited() ? details_->value : -1; }
  /// The signal that killed the child when signaled() or timed_out(), else 0.
  [[nodiscard]] int signal_number() const noexcept { return signaled() || timed_out() ? details_->value : 0; }
  /// "SIGSEGV" for signal_number(), or "" when no signal killed the child.
  [[nodiscard]] std::string signal_name() const {
    return signal_number() != 0 ? detail::signal_name(signal_number()) : std::string();
  }
  /// The demangled type of what the child threw ("std::runtime_error"), when
  /// threw(); "" otherwise, or where the C++ ABI cannot name it.
  [[nodiscard]] const std::string& exception_type() const noexcept { return details_->exception_type; }
  /// Its what() when it was a std::exception, at most max_what_length bytes;
  /// "" otherwise.
  [[nodiscard]] const std::string& exception_what() const noexcept { return details_->exception_what; }
  /// Whether exception_what() was cut to max_what_length.
  [[nodiscard]] bool what_truncated() const noexcept { return details_->what_truncated; }

  /// What the child wrote to stdout and stderr, with
  /// fork_options::capture_output (its captured member is false otherwise,
  /// and for a pool task). Not part of what(), which stays one sentence.
  [[nodiscard]] const captured_output& output() const noexcept { return details_->output; }

private:
  friend struct detail::child_error_access;

  static std::string describe(const details& d) {
    std::string s = "child " + std::to_string(d.pid);
    switch (d.why) {
    case reason::exited: return s + " exited with code " + std::to_string(d.value) + " without a result";
    case reason::signaled: return s + " was killed by " + detail::signal_name(d.value);
    case reason::threw:
      s += " threw ";
      s += d.exception_type.empty() ? std::string("an exception") : d.exception_type;
      if (!d.exception_what.empty()) s += ": " + d.exception_what;
      if (d.what_truncated) s += " [truncated]";
      return s;
    case reason::timed_out:
      s += " timed out";
      if (d.ran_for.count() >= 0) s += " after running " + std::to_string(d.ran_for.count() / 1'000'000) + " ms";
      if (d.prepare_time.count() >= 1'000'000) {
        s += " (its fork waited " + std::to_string(d.prepare_time.count() / 1'000'000) + " ms to be prepared first)";
      }
      return s + " and was killed by " + detail::signal_name(d.value);
    case reason::prepare_timed_out:
      return "no child was forked: " +
             (d.blocker.empty() ? std::string("the fork could not be prepared in time") : d.blocker);
    case reason::cancelled: return "the task never ran: it was still queued when the pool shut down";
    case reason::malformed: return s + " delivered a malformed result: " + d.defect;
    case reason::lost:
      return s + " ended without a result and was reaped by someone else"
                 " (SIGCHLD ignored or a foreign waitpid)";
    }
    return s + " ended in an unknown way";
  }

  std::shared_ptr<const details> details_;
};

namespace detail {
/// Attaches captured output to an error made before it was read.
struct child_error_access {
  static void attach(child_error& e, captured_output output) {
    auto d = std::make_shared<child_error::details>(*e.details_);
    d->output = std::move(output);
    e.details_ = std::move(d);
  }
};
} // namespace detail

} // namespace forksafe

#endif // FORKSAFE_CHILD_ERROR_HPP
