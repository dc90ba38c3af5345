// SPDX-License-Identifier: MIT
//
// forksafe/process_pool.hpp: pre-forked worker processes that run tasks and
// hand back process_result<R>, the same handle fork_call returns.
//
// Defines:
//   pool_options   per-task timeout, tasks per worker, shutdown deadline.
//   pool_task      concept: what submit accepts.
//   process_pool   the pool: submit(f, args...), size(), shutdown().
//
// Why: fork_call pays for a fork per task (150-250 µs here, ~40 ms for a
// parent with 1 GiB touched). The pool forks its workers once and keeps
// them. Unlike Python's ProcessPoolExecutor, a task that kills its worker
// (SIGSEGV, abort, _exit) fails alone, as a child_error; the worker is
// replaced and every other task goes on. And what crosses the boundary is
// checked at compile time: the callable, the arguments and the result must
// be trivially_serializable; the first error line of a task that is not
// names submit, the type and what to do instead.
//
// How: each worker owns a slot in one shared mapping made before the
// workers are forked. A task travels as bytes, with a pointer to a function
// that knows their types (the worker is a fork of the parent, so that
// function is at the same address there): the callable and the arguments
// themselves when they are plain bytes, else their wire form (a string, a
// vector, a struct listing its members), in the slot or, above 1 KiB, in a
// memfd the parent passes over a socket. The worker builds the result in
// the slot (above 1 KiB: as bytes in a memfd mapping the parent passed, or
// its wire form in a memfd the worker sends back) and wakes the parent with
// a futex. A caller waiting in get() collects its own
// result: two handoffs per task. A supervisor thread watches the workers'
// pidfds, enforces timeouts, replaces workers, and collects results no one
// is waiting for.
//
// Linux-only: pidfd (5.3+), memfd_create (3.17+), shared futexes.

#ifndef FORKSAFE_PROCESS_POOL_HPP
#define FORKSAFE_PROCESS_POOL_HPP

#include "child_error.hpp"
#include "detail/config.hpp"
#include "detail/pool_core.hpp"
#include "process_result.hpp"
#include "trivially_serializable.hpp"

#include <chrono>      // pool_options
#include <cstddef>     // std::size_t
#include <cstdio>      // std::fprintf: a destructor's failure
#include <cstring>     // std::memcpy
#include <exception>   // std::exception
#include <functional>  // std::invoke
#include <memory>      // std::shared_ptr
#include <new>         // placement new: the payload in zeroed bytes
#include <optional>    // pool_options::task_timeout
#include <tuple>       // the arguments
#include <type_traits> // submit's constraints
#include <utility>     // std::forward

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// Options for a process_pool.
struct pool_options {
  /// How long one task may run in its worker. Past it the worker is killed
  /// (SIGKILL) and replaced, and the task fails with child_error timed_out().
  /// Empty: no limit.
  std::optional<std::chrono::nanoseconds> task_timeout{};
  /// How many tasks a worker runs before it is replaced by a fresh fork of
  /// the parent (0: never). Bounds what a leaky task can accumulate.
  std::size_t max_tasks_per_worker = 0;
  /// How long shutdown() (and the destructor) lets queued and running tasks
  /// finish before killing busy workers (their tasks fail timed_out()) and
  /// failing queued tasks (cancelled(): they never ran).
  std::chrono::nanoseconds shutdown_deadline = std::chrono::seconds(5);
};

namespace detail {

template <class F>
inline constexpr bool pool_callable_ok =
    std::is_pointer_v<F> ? std::is_function_v<std::remove_pointer_t<F>> : trivially_serializable<F>;

// The first line of each diagnostic submit gives.
FORKSAFE_DETAIL_REJECTION(
    process_pool_submit_callable_cannot_cross_a_process_boundary__capture_plain_values_only_pass_strings_and_vectors_as_arguments);
FORKSAFE_DETAIL_REJECTION(
    process_pool_submit_argument_cannot_cross_a_process_boundary__pass_plain_values_or_opt_your_struct_in_with_forksafe_members);
FORKSAFE_DETAIL_REJECTION(
    process_pool_submit_result_cannot_cross_a_process_boundary__return_plain_values_or_opt_your_struct_in_with_forksafe_members);

template <class F, class... Args>
constexpr void diagnose_pool_task() {
  using R = std::invoke_result_t<F&, Args&...>;
  if constexpr (!pool_callable_ok<F>) {
    FORKSAFE_DETAIL_REJECT(
        process_pool_submit_callable_cannot_cross_a_process_boundary__capture_plain_values_only_pass_strings_and_vectors_as_arguments,
        culprit_t<F>, F,
        "forksafe::process_pool::submit: the callable cannot cross a process boundary; capture only plain "
        "values (numbers, plain structs), pass strings, vectors and your structs as arguments");
  } else if constexpr (!(trivially_serializable<Args> && ...)) {
    using culprit = typename first_culprit<void, Args...>::type;
    using arguments = std::tuple<Args...>;
    FORKSAFE_DETAIL_REJECT(
        process_pool_submit_argument_cannot_cross_a_process_boundary__pass_plain_values_or_opt_your_struct_in_with_forksafe_members,
        culprit, arguments,
        "forksafe::process_pool::submit: an argument cannot cross a process boundary; pass plain values "
        "(numbers, std::string, std::vector, ...) or opt your struct in with forksafe_members()");
  } else if constexpr (!trivially_serializable<transported_t<R>>) {
    FORKSAFE_DETAIL_REJECT(
        process_pool_submit_result_cannot_cross_a_process_boundary__return_plain_values_or_opt_your_struct_in_with_forksafe_members,
        culprit_t<transported_t<R>>, R,
        "forksafe::process_pool::submit: the task's result cannot cross a process boundary; return plain "
        "values (numbers, std::string, std::vector, ...) or opt your struct in with forksafe_members()");
  }
}

} // namespace detail

/// What can be submitted: `f(args...)` is invocable; `f` is a function
/// pointer or a trivially_serializable object (a captureless lambda, one
/// whose captures are plain values, or a struct of yours listing its
/// members); every argument is trivially_serializable (a 16 MiB
/// std::vector<double>, a std::string, a struct listing its members); the
/// result is void or trivially_serializable. A lambda's captures cannot be
/// listed, so a lambda capturing a std::string does not cross: pass the
/// string as an argument. A lambda that captures a pointer or a reference
/// cannot be told apart from one that captures values: such a capture would
/// point into the parent's memory as it was when the worker was forked.
/// Capture values. The worker calls its copy of `f` with lvalues of its
/// copies of the arguments. Checked at compile time only.
template <class F, class... Args>
concept pool_task = std::invocable < std::decay_t<F>
&, std::decay_t<Args>&... > &&detail::pool_callable_ok<std::decay_t<F>> &&
       (trivially_serializable<std::decay_t<Args>> && ...) &&
       trivially_serializable<detail::transported_t<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>>>;

namespace detail {
/// What submit returns: a process_result, or, for a task that cannot
/// cross, an inert type, so the one diagnostic is not followed by others.
template <class F, class... Args>
struct pool_task_diagnosis {
  static consteval bool report() {
    diagnose_pool_task<std::decay_t<F>, std::decay_t<Args>...>();
    return true;
  }
};
template <class F, class... Args>
struct submit_return {
  using type = rejected_call<pool_task_diagnosis<F, Args...>>;
};
template <class F, class... Args>
requires pool_task<F, Args...>
struct submit_return<F, Args...> {
  using type = process_result<call_result_t<std::decay_t<F>&, std::decay_t<Args>&...>>;
};
} // namespace detail

/// A pool of pre-forked worker processes.
///
/// | a task...                                   | get() on its process_result                        | the pool            |
/// |---------------------------------------------|----------------------------------------------------|---------------------|
/// | returns a value                             | returns it                                         | worker reused       |
/// | throws                                      | throws child_error, threw(), type and what()       | worker lives        |
/// | kills its worker (SIGSEGV, abort, signal)   | throws child_error, signaled(), signal_name()      | worker replaced     |
/// | ends its worker (_exit(N), exit(N))         | throws child_error, exited(), exit_code() == N     | worker replaced     |
/// | runs past pool_options::task_timeout        | throws child_error, timed_out()                    | worker killed, replaced |
/// | is still queued at a shutdown past its deadline | throws child_error, cancelled() (it never ran) | stopped             |
///
/// Thread-safety: submit() and size() may be called from any number of
/// threads at once, also while shutdown() runs (once it has begun, submit()
/// throws); concurrent shutdown() calls are serialised (each returns once the
/// pool is down). The destructor must not run while another thread still
/// uses the pool. Each process_result is used by one thread at a time.
///
/// Workers are forked when the pool starts and whenever one must be replaced
/// (then from the pool's supervisor thread, at times the program does not
/// choose), with fork(), so atfork_registry handlers run and fork_safe_mutex
/// locks are quiesced; the parent may have threads. In a worker, caught
/// signals are reset to SIG_DFL (ignored ones stay ignored). A worker may use
/// threads; it runs one task at a time, and what a task leaves behind in it
/// (globals, leaks, threads) is seen by the later tasks it runs
/// (pool_options::max_tasks_per_worker bounds that). A worker exits once the
/// parent is gone: it checks once a second while idle, so a running task
/// finishes first. Code loaded with dlopen after the pool started is not
/// mapped in its workers: submitting it throws std::invalid_argument rather
/// than crashing a worker.
///
/// In a process forked from the pool's owner (a plain fork()), the inherited
/// copy is not that process's pool: its workers, mapping and supervisor are
/// the owner's. submit() there throws std::logic_error; shutdown() and the
/// destructor only close that process's copies of the pool's descriptors,
/// and neither stop, signal nor wait for the owner's workers (tested).
///
/// Not copyable, not movable (the supervisor thread holds its address).
class process_pool {
public:
  /// Forks `workers` worker processes (0 is taken as 1) and starts the
  /// supervisor thread. Blocks for the forks (each waits for the
  /// atfork_registry prepare handlers, see fork_call). Throws
  /// std::system_error if a worker, the shared mapping, a descriptor or the
  /// thread cannot be made (errno: EAGAIN, ENOMEM, EMFILE...), std::bad_alloc;
  /// what was made by then is undone. `options`: see pool_options; its
  /// task_timeout counts from when the task is handed to a worker (again
  /// from the start if that worker died before taking it and the task went
  /// to another), not from submit().
  explicit process_pool(std::size_t workers, pool_options options = {})
      : core_(std::make_shared<detail::pool_core>(
            workers == 0 ? 1 : workers,
            detail::pool_limits{options.task_timeout, options.max_tasks_per_worker, options.shutdown_deadline})) {
    core_->start();
  }

  /// Shuts down (see shutdown(), also for how long it blocks). Handles of
  /// tasks stay usable: their outcomes are known by then.
  ~process_pool() {
    try {
      core_->shutdown();
    } catch (const std::exception& e) {
      // Ending the workers cannot fail; only std::mutex::lock or
      // std::thread::join can (std::system_error), which they do not for a
      // pool used as documented. A destructor must not throw: say it here.
      // ~pool_core ends the workers all the same, unless the supervisor could
      // not be stopped: as it still uses the core, destroying the core then
      // ends the program (std::terminate) rather than free what it uses.
      std::fprintf(stderr, "forksafe: ~process_pool: the pool could not be shut down: %s\n", e.what());
    }
  }

  process_pool(const process_pool&) = delete; // workers and the supervisor belong to one pool
  process_pool& operator=(const process_pool&) = delete;

  /// Queues `f(args...)` to run in a worker and returns without waiting for
  /// one, with a process_result<R>, R being the call's result type without
  /// cv. The callable and the arguments are copied when submit is called:
  /// as their bytes when they are plain bytes that fit in 1 KiB, else in
  /// their wire form (in the worker's slot up to 1 KiB, in a memfd above:
  /// any size). Tasks are handed to idle workers in submission order.
  /// Constraint: `f(args...)` is invocable; mandates pool_task, and the first
  /// error line of a task that is not names submit, the type that cannot
  /// cross and what to do instead. Throws std::invalid_argument if `f`'s
  /// code was loaded after the pool started, std::logic_error once
  /// shutdown() has begun, std::system_error with errno if the memory for a
  /// large request or result cannot be made (memfd_create, ftruncate, mmap),
  /// std::bad_alloc.
  template <class F, class... Args>
  requires std::invocable < std::decay_t<F>
  &, std::decay_t<Args>&... >
         [[nodiscard]] typename detail::submit_return<F, Args...>::type submit(F&& f, Args&&... args) {
    if constexpr (!pool_task<F, Args...>) {
      return {}; // the return type reported it
    } else {
      const std::decay_t<F>& callable = f; // a function's name becomes a pointer to it
      return submit_task<std::decay_t<F>, std::decay_t<Args>...>(callable, args...);
    }
  }

  /// The number of worker slots, fixed at construction (a slot whose worker is
  /// being replaced still counts).
  [[nodiscard]] std::size_t size() const noexcept { return core_->size(); }

  /// Stops accepting tasks, lets queued and running tasks finish, then ends
  /// the workers. Waits at most pool_options::shutdown_deadline (counted from
  /// the first call); then kills the workers still busy (their tasks fail
  /// timed_out) and fails tasks still queued as cancelled(). Blocks until then, plus
  /// up to ~100 ms per worker that does not exit when told. Never hangs;
  /// idempotent; leaves no zombie.
  void shutdown() { core_->shutdown(); }

private:
  template <class F, class... Args, class FRef, class... ARefs>
  process_result<detail::call_result_t<F&, Args&...>> submit_task(FRef& f, ARefs&... args) {
    using R = detail::call_result_t<F&, Args&...>;
    std::size_t result_bytes = 0;
    if constexpr (detail::stored_in_region<R>()) result_bytes = sizeof(R);
    auto ticket = core_->make_ticket(&detail::pool_invoke<R, F, Args...>, result_bytes, code_address(f));
    if constexpr (detail::payload_as_bytes<F, Args...>) {
      using payload = detail::pool_payload<F, Args...>;
      // Its padding travels to the worker too: built in zeroed bytes, so the
      // padding is usually zero rather than bytes of this stack (and does
      // not look uninitialised to memcheck, which cannot see one process
      // write what another then reads). Best effort: the optimiser may drop
      // the zeroing, and std::tuple is not trivially copyable, so
      // __builtin_clear_padding cannot be used on it.
      alignas(payload) unsigned char bytes[sizeof(payload)] = {}; // NOLINT(modernize-avoid-c-arrays): raw storage
      ::new (static_cast<void*>(bytes)) payload{f, {args...}};
      std::memcpy(ticket->request.data(), bytes, sizeof(payload));
      ticket->request_size = sizeof(payload);
    } else {
      detail::wire_writer counter;
      detail::write_task(counter, f, args...);
      const std::size_t n = counter.size();
      unsigned char* out = ticket->request.data();
      if (n > ticket->request.size()) {
        ticket->args = core_->take_args_region(n);
        ticket->args_size = n;
        detail::populate_for_writing(ticket->args.data(), n);
        out = static_cast<unsigned char*>(ticket->args.data());
      } else {
        ticket->request_size = n;
      }
      detail::wire_writer writer(out);
      detail::write_task(writer, f, args...);
    }
    core_->enqueue(ticket);
    return detail::result_access::make<R>(std::move(ticket));
  }

  // Besides pool_invoke (instantiated where submit is called, so in the
  // same object as a lambda's code), a function pointer's own target must
  // be mapped in the workers.
  template <class F>
  static const void* code_address(const F& f) noexcept {
    if constexpr (std::is_pointer_v<F>) {
      return reinterpret_cast<const void*>(f);
    } else {
      return nullptr;
    }
  }

  std::shared_ptr<detail::pool_core> core_;
};

} // namespace forksafe

#endif // FORKSAFE_PROCESS_POOL_HPP
