// SPDX-License-Identifier: MIT
//
// forksafe/fork_call.hpp: run a callable in a forked child and get its value
// back, or a precise error saying how the child ended.
//
// Defines:
//   fork_options            a timeout and a process group for one call
//   fork_call(f, args...)   forks; the child runs std::invoke(f, args...)
//
// Only plain data can cross a process boundary (numbers, strings, vectors,
// maps, your structs once they list their members), and fork_call checks
// that at compile time (trivially_serializable). Everything
// that can go wrong at run time reaches the parent as a child_error or a
// std::system_error: never a hang, a zombie or a leaked descriptor. Small
// results come back through a pipe in one frame; large ones are built in
// place in a shared mapping, or, a large string or vector, written into a
// memfd (docs/design.md).

#ifndef FORKSAFE_FORK_CALL_HPP
#define FORKSAFE_FORK_CALL_HPP

#include "detail/config.hpp"
#include "detail/forked_source.hpp"
#include "process_result.hpp"
#include "trivially_serializable.hpp"

#include <chrono>      // fork_options::timeout
#include <concepts>    // std::invocable
#include <cstddef>     // std::size_t: fork_options::capture_limit
#include <functional>  // std::invoke
#include <memory>      // std::make_shared: the child's source
#include <optional>    // fork_options::timeout
#include <type_traits> // std::invoke_result_t
#include <utility>     // std::forward

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

namespace detail {

FORKSAFE_DETAIL_REJECTION(
    fork_call_result_cannot_cross_a_process_boundary__return_plain_values_or_opt_your_struct_in_with_forksafe_members);

template <class R>
inline constexpr bool fork_call_result_ok = trivially_serializable<transported_t<R>>;

/// What fork_call and process_pool::submit return for a call whose values
/// cannot cross: completing this type (which the call expression does, at
/// the caller's line, before anything else about the call is checked)
/// reports `Diagnosis`, so that report is the first error.
template <class Diagnosis>
struct rejected_call {
  static_assert(Diagnosis::report());
};

template <class R>
struct fork_call_diagnosis {
  static consteval bool report() {
    FORKSAFE_DETAIL_REJECT(
        fork_call_result_cannot_cross_a_process_boundary__return_plain_values_or_opt_your_struct_in_with_forksafe_members,
        culprit_t<transported_t<R>>, R,
        "forksafe::fork_call: the callable's result cannot cross a process boundary; return plain values "
        "(numbers, std::string, std::vector, std::map, ...) or opt your struct in with forksafe_members()");
    return true;
  }
};

template <class R>
using fork_call_return_t = std::conditional_t<fork_call_result_ok<R>, process_result<std::remove_cv_t<R>>,
                                              rejected_call<fork_call_diagnosis<R>>>;

} // namespace detail

/// Options for one fork_call. An aggregate: name what you set,
/// `fork_call({.timeout = 2s, .own_process_group = true}, f)`.
struct fork_options {
  /// How long the whole call may take, counted from fork_call: preparing the
  /// fork (the registry's handlers, which may wait for locks other threads
  /// hold) and the child's run. If the preparation is not done by then,
  /// nothing is forked and get() throws child_error with prepare_timed_out().
  /// Otherwise, once it has passed, the child is killed with SIGKILL (its
  /// whole process group, with own_process_group) and reaped, and get()
  /// throws child_error with timed_out() (what() says how long the child ran
  /// and how long its fork waited first); a value the child delivered before
  /// it was killed still wins. Empty: no limit (the registry's prepare
  /// timeout still bounds the preparation). Zero or negative: the child is
  /// killed at the first wait. forksafe starts no thread: the timeout is enforced by the
  /// handle's waiting and polling members (get, wait, wait_for, wait_until,
  /// ready) and its destructor kills regardless, so a caller that waits on
  /// process_result::native_handle() should wake at deadline() and call ready().
  std::optional<std::chrono::nanoseconds> timeout{};
  /// Start the child in a new process group (setpgid), so that the timeout,
  /// kill() and the destructor's SIGKILL also reach every descendant that
  /// stays in it. Descendants of a child that ends normally keep running.
  bool own_process_group = false;
  /// Capture what the child writes to its standard output and standard
  /// error (file descriptors 1 and 2, so printf, std::cout and a crash
  /// message alike) instead of letting it reach the parent's: each goes
  /// through a pipe that the parent drains whenever it waits (get, wait,
  /// wait_for, wait_until, ready), keeping the last capture_limit bytes of
  /// each. Read it on the handle (process_result::output()) or on the
  /// child_error (child_error::output()). A child writes at full speed while
  /// the parent waits; while it does not, a child that has written more
  /// than a pipe holds (1 MiB where the system allows it, else 64 KiB)
  /// pauses until it does. Costs two pipes per call (about 3 us). Output a
  /// grandchild writes after the child ended is not waited for.
  bool capture_output = false;
  /// With capture_output: how many bytes of each stream are kept, the last
  /// ones (the end of a stream is where a crash or an abort writes).
  std::size_t capture_limit = std::size_t{64} * 1024;
  /// Reset every signal the parent handles (a test framework's SIGINT and
  /// SIGTERM handlers, say) to SIG_DFL in the child, not only the crash
  /// signals; ignored signals stay ignored. For a child that should end as a
  /// plain process would, whatever the parent installed.
  bool reset_signal_handlers = false;
};

/// Forks; the child runs `std::invoke(f, args...)` and delivers its result.
/// Returns process_result<R>, R being that call's result type without cv,
/// once fork() has returned (that fork waits for the atfork_registry's
/// handlers: quiesce locks held by other threads delay it, until the call's
/// timeout or the registry's prepare timeout, whichever comes first; then no
/// child is made and get() throws child_error, prepare_timed_out()); get()
/// waits for the child. `f` and `args` are used in the child only (it
/// owns a copy of the whole address space), so they need not be
/// serialisable, and a callable may capture anything: only the result
/// crosses back.
///
/// Constraint: `f(args...)` is invocable. Mandates: it returns void or a
/// trivially_serializable type (std::string, std::vector<std::string>, a
/// struct listing its members...). A callable returning a future, a lock, a
/// pointer, a reference, a view or a struct that did not opt in makes the
/// call ill-formed; the first error line names fork_call, the type that
/// cannot cross (std::future<int> inside std::vector<std::future<int>>) and
/// what to do instead.
///
/// In the parent: flushes C stdio, std::cout, std::clog and std::cerr (so
/// buffered output is not printed twice), blocks every signal across fork(),
/// runs the atfork_registry's handlers (as any fork() does).
/// In the child: only the calling thread exists; the registry's child
/// handlers have run (fork_generation() is one higher, fork-safe mutexes
/// behave as their policy says). It restores the signal mask, resets crash
/// signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS) to
/// SIG_DFL (a crash is reported as its signal, not handled by an inherited
/// handler; other handlers stay), runs the callable under a catch-all,
/// builds the result in place, flushes its stdio and standard C++ streams,
/// writes its result frame and ends with _exit on every path: no atexit
/// handler, static destructor or test framework reporter runs there, and
/// nothing unwinds past fork_call. A process the callable forks that returns
/// into fork_call ends there silently (exit code 0); only the child reports.
///
/// Errors: std::system_error with errno if the child cannot be started:
/// EMFILE/ENFILE (the pipe), ENOMEM (the shared mapping, e.g. under
/// RLIMIT_AS), EAGAIN/ENOMEM (fork, e.g. under RLIMIT_NPROC); nothing is
/// leaked then. Thread-safety: may be called from any number of threads at
/// once.
template <class F, class... Args>
requires std::invocable<F, Args...>
[[nodiscard]] detail::fork_call_return_t<std::invoke_result_t<F, Args...>> fork_call(const fork_options& options, F&& f,
                                                                                     Args&&... args) {
  using R = detail::call_result_t<F, Args...>;
  if constexpr (!detail::fork_call_result_ok<std::invoke_result_t<F, Args...>>) {
    return {}; // the return type reported it
  } else {
    // Returns the callable's prvalue as is, so the child builds it in place.
    auto call = [&]() -> decltype(auto) { return std::invoke(std::forward<F>(f), std::forward<Args>(args)...); };
    auto source = std::make_shared<detail::forked_source>();
    source->start<R>(call, detail::fork_settings{options.timeout, options.own_process_group, options.capture_output,
                                                 options.capture_limit, options.reset_signal_handlers});
    return detail::result_access::make<R>(std::move(source));
  }
}

/// fork_call with default options: no timeout, same process group.
template <class F, class... Args>
requires std::invocable<F, Args...>
[[nodiscard]] detail::fork_call_return_t<std::invoke_result_t<F, Args...>> fork_call(F&& f, Args&&... args) {
  return fork_call(fork_options{}, std::forward<F>(f), std::forward<Args>(args)...);
}

} // namespace forksafe

#endif // FORKSAFE_FORK_CALL_HPP
