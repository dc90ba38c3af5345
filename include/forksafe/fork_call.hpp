// SPDX-License-Identifier: MIT
//
// forksafe/fork_call.hpp: run a callable in a forked child and get its value
// back, or a precise error saying how the child ended.
//
// Defines:
//   fork_options            a timeout and a process group for one call
//   fork_call(f, args...)   forks; the child runs std::invoke(f, args...)
//
// Only a value whose bytes are the value can cross a process boundary, and
// fork_call checks that at compile time (trivially_serializable). Everything
// that can go wrong at run time reaches the parent as a child_error or a
// std::system_error: never a hang, a zombie or a leaked descriptor. Small
// results come back through a pipe in one frame; large ones are built in
// place in a shared mapping (docs/design.md).

#ifndef FORKSAFE_FORK_CALL_HPP
#define FORKSAFE_FORK_CALL_HPP

#include "detail/config.hpp"
#include "detail/forked_source.hpp"
#include "process_result.hpp"
#include "trivially_serializable.hpp"

#include <chrono>      // fork_options::timeout
#include <concepts>    // std::invocable
#include <functional>  // std::invoke
#include <memory>      // std::make_shared: the child's source
#include <optional>    // fork_options::timeout
#include <type_traits> // std::invoke_result_t
#include <utility>     // std::forward

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

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
/// Constraint: `f(args...)` is invocable and returns void or a
/// trivially_serializable type. A callable returning std::string, a vector, a
/// future, a lock, a pointer or a reference makes the call ill-formed, with a
/// diagnostic naming trivially_serializable.
///
/// In the parent: flushes C stdio and std::cout/std::clog/std::cerr (so
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
requires std::invocable<F, Args...> && trivially_serializable<detail::transported_t<std::invoke_result_t<F, Args...>>>
[[nodiscard]] process_result<detail::call_result_t<F, Args...>> fork_call(const fork_options& options, F&& f,
                                                                          Args&&... args) {
  // Returns the callable's prvalue as is, so the child builds it in place.
  auto call = [&]() -> decltype(auto) { return std::invoke(std::forward<F>(f), std::forward<Args>(args)...); };
  using R = detail::call_result_t<F, Args...>;
  auto source = std::make_shared<detail::forked_source>();
  source->start<R>(call, options.timeout, options.own_process_group);
  return detail::result_access::make<R>(std::move(source));
}

/// fork_call with default options: no timeout, same process group.
template <class F, class... Args>
requires std::invocable<F, Args...> && trivially_serializable<detail::transported_t<std::invoke_result_t<F, Args...>>>
[[nodiscard]] process_result<detail::call_result_t<F, Args...>> fork_call(F&& f, Args&&... args) {
  return fork_call(fork_options{}, std::forward<F>(f), std::forward<Args>(args)...);
}

} // namespace forksafe

#endif // FORKSAFE_FORK_CALL_HPP
