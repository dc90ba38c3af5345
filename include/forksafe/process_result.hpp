// SPDX-License-Identifier: MIT
//
// forksafe/process_result.hpp: the handle on work run in another process:
// a fork_call child or a process_pool task. It waits for the outcome and
// hands back the value, or throws the child_error that says how the child
// ended.
//
// Defines:
//   process_result<T>   the move-only handle; get(), wait(), wait_for(), ready(), kill()
//
// fork_call itself is in <forksafe/fork_call.hpp> (included at the end of
// this header, so code that includes only this one keeps compiling).

#ifndef FORKSAFE_PROCESS_RESULT_HPP
#define FORKSAFE_PROCESS_RESULT_HPP

#include "child_error.hpp"
#include "detail/config.hpp"
#include "detail/deadlines.hpp"
#include "detail/result_frame.hpp"
#include "detail/result_source.hpp"
#include "trivially_serializable.hpp"

#include <chrono>      // timeouts and deadlines
#include <csignal>     // SIGKILL
#include <cstddef>     // std::size_t
#include <cstring>     // std::memcpy
#include <future>      // std::future_status, std::future_error
#include <memory>      // std::shared_ptr: the source
#include <new>         // std::launder
#include <optional>    // the error
#include <string>      // a malformed value's defect
#include <type_traits> // the storage
#include <utility>     // std::exchange, std::move

#include <sys/types.h> // pid_t

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

template <class T>
class process_result;

namespace detail {

/// How fork_call and process_pool make handles.
struct result_access {
  template <class T>
  static process_result<T> make(std::shared_ptr<result_source> source) noexcept {
    return process_result<T>(std::move(source));
  }
};

template <class T>
struct inline_storage {
  alignas(T) unsigned char bytes[sizeof(T)]; // NOLINT(modernize-avoid-c-arrays): raw storage
};
struct no_storage {};
/// A value read back from its wire form, on the heap: moving the handle
/// moves a pointer, whatever T's own move costs.
template <class T>
struct decoded_storage {
  std::unique_ptr<T> value;
};

/// The first line of the diagnostic for a process_result<T> whose T cannot cross.
FORKSAFE_DETAIL_REJECTION(
    process_result_value_type_cannot_cross_a_process_boundary__use_plain_values_or_opt_your_struct_in_with_forksafe_members);

} // namespace detail

/// The handle on one fork_call: the child process and, once it ended, its
/// value or the child_error that says how it ended. Move-only; made by
/// fork_call, and by process_pool::submit for a task run in a pool worker
/// (differences noted below and on each member).
///
/// What get() does, for each way a child can end:
///
/// | the child...                                          | get()                                         |
/// |-------------------------------------------------------|-----------------------------------------------|
/// | returned a value                                      | returns it (T& on an lvalue, T on an rvalue)  |
/// | returned, T = void                                    | returns                                       |
/// | delivered its value, then was reaped by someone else  | returns it                                    |
/// | threw                                                 | throws child_error: threw()                   |
/// | ended with _exit(N) / exit(N) without returning       | throws child_error: exited(), exit_code() N   |
/// | was killed by a signal (crash, kill(), OOM killer)    | throws child_error: signaled(), signal_name() |
/// | ran past fork_options::timeout                        | kills, reaps; throws child_error: timed_out() |
/// | ended without a result and was reaped by someone else | throws child_error: lost()                    |
/// | was never forked: its fork could not be prepared in   | throws child_error: prepare_timed_out()       |
/// | time                                                  |                                               |
/// | delivered a value that does not check out (a frame    | throws child_error: malformed(), defect()     |
/// | cut short or garbled, a length beyond what arrived)   |                                               |
/// | could not be started                                  | (fork_call threw std::system_error instead)   |
///
/// The outcome is known once the child has ended (its pidfd turned
/// readable); without a pidfd, also once its result frame arrived. A pool
/// task's outcome is known once its worker answered or ended (see
/// process_pool for its table). get() can be called again: it returns the
/// same value or throws the same error.
///
/// Destruction: a child that still runs is killed with SIGKILL (its process
/// group too, with own_process_group) and reaped; nothing is left as a zombie.
/// (Without a pidfd, that includes a child that delivered its result but had
/// not been seen to exit yet: it is past the callable, inside _exit.) A pool
/// task is not cancelled: it runs on (or stays queued) and the pool discards
/// its result.
///
/// Thread-safety: none; one thread at a time uses a handle (different
/// handles may be used by different threads at once).
///
/// In a forked child: an inherited copy refers to a process that is not the
/// forked child's child. Do not use it there; destroying it there (a child
/// that returns from main after a plain fork()) closes its descriptors and
/// neither signals, waits for, nor unmaps anything. fork_call's own children
/// end with _exit and destroy nothing.
template <class T>
class [[nodiscard]] process_result {
  static constexpr bool crosses = std::is_void_v<T> || trivially_serializable<T>;
  static consteval bool diagnose() {
    if constexpr (!crosses) {
      FORKSAFE_DETAIL_REJECT(
          detail::
              process_result_value_type_cannot_cross_a_process_boundary__use_plain_values_or_opt_your_struct_in_with_forksafe_members,
          detail::culprit_t<T>, T,
          "forksafe::process_result<T>: T cannot cross a process boundary; use plain values "
          "(numbers, std::string, std::vector, ...) or opt your struct in with forksafe_members()");
    }
    return true;
  }
  static_assert(diagnose());
  static_assert(detail::result_alignment<T>() <= detail::max_result_alignment,
                "process_result<T>: T is aligned to more than a page (4096 bytes), which the shared result "
                "region cannot guarantee");
  static constexpr bool in_region = detail::stored_in_region<T>();
  static constexpr bool decoded = crosses && detail::needs_wire_form<T>;
  static constexpr bool in_handle = !std::is_void_v<T> && !in_region && !decoded;
  using storage_type = std::conditional_t<in_handle, detail::inline_storage<T>,
                                          std::conditional_t<decoded, detail::decoded_storage<T>, detail::no_storage>>;

public:
  /// The callable's result type, cv-unqualified; may be void.
  using value_type = T;

  /// An empty handle: valid() is false.
  process_result() noexcept = default;

  /// Takes over `other`'s child and outcome; `other` becomes !valid().
  process_result(process_result&& other) noexcept
      : source_(std::move(other.source_)), storage_(std::move(other.storage_)), error_(std::move(other.error_)),
        state_(std::exchange(other.state_, state::empty)) {}

  /// Takes over `other`'s child. A child this handle still had is killed and
  /// reaped first, as by the destructor (a pool task it had is dropped).
  process_result& operator=(process_result&& other) noexcept {
    if (this != &other) {
      source_ = std::move(other.source_); // kills and reaps the child this handle had
      storage_ = std::move(other.storage_);
      error_ = std::move(other.error_);
      state_ = std::exchange(other.state_, state::empty);
    }
    return *this;
  }

  process_result(const process_result&) = delete; // one owner reaps the child
  process_result& operator=(const process_result&) = delete;

  /// Kills (SIGKILL) and reaps a child that still runs (blocking until the
  /// kernel has ended it); closes and unmaps. A pool task is dropped, not
  /// cancelled.
  ~process_result() = default;

  /// Waits as wait() does (no limit but the timeout), then returns a
  /// reference to the value, which lives in this handle (inline; in the
  /// shared mapping for a large T that crosses as its bytes, so a 64 MiB
  /// array is never copied onto a stack; on the heap for a value read back
  /// from its wire form, a std::string or a vector) and stays valid until the
  /// handle is destroyed, assigned to or moved from. A value whose wire form
  /// does not check out is an error: child_error malformed(). Throws child_error if the child delivered no value (see the
  /// table above), std::future_error(no_state) if !valid(), std::system_error
  /// if waiting itself failed (waitid with an errno other than EINTR/ECHILD).
  std::add_lvalue_reference_t<T> get() & {
    wait();
    if (state_ == state::failed) throw *error_;
    if constexpr (!std::is_void_v<T>) return *value_pointer();
  }

  /// As get() &, but returns the value itself: `fork_call(f).get()`. A value
  /// read back from its wire form is moved out, not copied (a 64 MiB vector
  /// costs a pointer move). Refused at compile time for a T larger than
  /// 1 MiB, which would land on the caller's stack.
  T get() && {
    if constexpr (std::is_void_v<T>) {
      get();
    } else {
      static_assert(sizeof(T) <= detail::by_value_result_limit,
                    "process_result<T>::get() && returns T by value, on the caller's stack, and this T is "
                    "larger than 1 MiB: keep the process_result in a variable and use the reference that "
                    "get() returns on an lvalue");
      return std::move(get());
    }
  }

  /// Waits until the outcome is known (the child ended, or its timeout passed
  /// and it was killed and reaped; a pool task: its worker answered or
  /// ended). No limit but fork_options::timeout (pool_options::task_timeout).
  /// Does not throw the child's error; get() does. Throws
  /// std::future_error(no_state) if !valid(), std::system_error as get().
  void wait() {
    require_valid();
    (void)wait_steady(std::chrono::steady_clock::time_point::max());
  }

  /// Waits at most `d`: std::future_status::ready once the outcome is known,
  /// timeout otherwise (never deferred). EINTR is retried internally. Kills
  /// and reaps a child whose fork_options::timeout passed. Throws as wait().
  template <class Rep, class Period>
  std::future_status wait_for(const std::chrono::duration<Rep, Period>& d) {
    require_valid();
    const auto until = detail::deadline_after(std::chrono::steady_clock::now(), d);
    return wait_steady(until) ? std::future_status::ready : std::future_status::timeout;
  }

  /// Waits until `t` on `Clock` (re-read after every wake, so a clock that
  /// jumps is followed): ready or timeout. Otherwise as wait_for().
  template <class Clock, class Duration>
  std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& t) {
    require_valid();
    for (;;) {
      const auto now = Clock::now();
      const auto left = now < t ? t - now : decltype(t - now)::zero();
      if (wait_steady(detail::deadline_after(std::chrono::steady_clock::now(), left))) {
        return std::future_status::ready;
      }
      if (Clock::now() >= t) return std::future_status::timeout;
    }
  }

  /// Whether the outcome is known, without blocking (beyond killing and
  /// reaping a child whose timeout has passed). Throws as wait().
  [[nodiscard]] bool ready() {
    require_valid();
    return wait_steady(std::chrono::steady_clock::time_point::min());
  }

  /// False for a default-constructed or moved-from handle.
  [[nodiscard]] bool valid() const noexcept { return state_ != state::empty; }

  /// The child's process id, or -1 if !valid(). Once the child was reaped the
  /// number may belong to another process: use kill() to signal the child.
  /// A pool task: its worker's pid, -1 while queued.
  [[nodiscard]] pid_t pid() const noexcept { return valid() ? source_->pid() : -1; }

  /// A descriptor that turns readable when the child is done, for poll/epoll:
  /// the child's pidfd, or, where none could be opened, the read end of the
  /// result pipe (readable once the result arrived; if the child dies without
  /// one, only at EOF, which a sibling holding a copy of the write end can
  /// delay: poll with a timeout and call ready()). A pool task: an eventfd,
  /// made on the first call (if it cannot be made, std::terminate: this is
  /// noexcept), readable once the outcome is known. Owned by the handle; -1
  /// if !valid(). Once it is readable, get() does not block.
  [[nodiscard]] int native_handle() const noexcept { return valid() ? source_->native_handle() : -1; }

  /// When the child's timeout expires (time_point::max() without one), for a
  /// caller that waits on native_handle() itself. Always time_point::max()
  /// for a pool task: the pool enforces pool_options::task_timeout itself.
  [[nodiscard]] std::chrono::steady_clock::time_point deadline() const noexcept {
    return valid() ? source_->deadline() : std::chrono::steady_clock::time_point::max();
  }

  /// Sends `sig` to the child (and its process group, with own_process_group)
  /// while it runs; does nothing once the outcome is known, so a reused pid is
  /// never signalled. A child killed this way is reported as signaled(),
  /// unless it had already delivered its value. A pool task: signals its
  /// worker while the task runs there (a killed worker is replaced); does
  /// nothing while the task is queued.
  void kill(int sig = SIGKILL) noexcept {
    if (state_ == state::running) source_->kill(sig);
  }

  /// What a fork_call child with fork_options::capture_output wrote to its
  /// stdout and stderr (see captured_output), once the outcome is known
  /// (get, wait or ready returned it); the same as child_error::output() on
  /// failure. Its captured member is false without capture, while the child
  /// runs, for a pool task and if !valid().
  [[nodiscard]] const captured_output& output() const noexcept {
    static const captured_output none{};
    return state_ == state::has_value || state_ == state::failed ? source_->output : none;
  }

private:
  friend struct detail::result_access;
  enum class state : unsigned char { empty, running, has_value, failed };

  explicit process_result(std::shared_ptr<detail::result_source> source) noexcept
      : source_(std::move(source)), state_(state::running) {
    if (source_->not_started) {
      error_ = *source_->not_started;
      state_ = state::failed;
    }
  }

  void require_valid() const {
    if (!valid()) throw std::future_error(std::future_errc::no_state);
  }

  // Waits until the outcome is known or `until` passes; true if known.
  bool wait_steady(std::chrono::steady_clock::time_point until) {
    if (state_ == state::running && source_->wait(until)) finish();
    return state_ != state::running;
  }

  // The source's outcome, decoded: its frame, if one checks out, else how
  // the process ended.
  void finish() {
    const detail::result_source& s = *source_;
    const detail::frame_view frame =
        detail::read_frame(s.frame.data(), s.frame_size, detail::frame_expectation::of<T>());
    if (frame.valid && frame.kind != detail::frame_kind::threw) {
      if constexpr (in_handle) std::memcpy(storage_.bytes, frame.payload, sizeof(T));
      if constexpr (decoded) {
        std::string defect;
        if (!decode(frame, defect)) {
          fail_malformed(std::move(defect));
          return;
        }
      }
      state_ = state::has_value;
      return;
    }
    if (frame.valid) {
      error_.emplace(detail::error_from_frame(frame, s.pid()));
    } else if (s.frame_size != 0) {
      // Bytes arrived, but not a frame that checks out.
      fail_malformed("what arrived (" + std::to_string(s.frame_size) +
                     " bytes) is not a result frame for this type: cut short, oversized or garbled");
      return;
    } else if (s.cancelled) {
      child_error::details d;
      d.why = child_error::reason::cancelled;
      error_.emplace(std::move(d));
    } else {
      error_.emplace(detail::error_from_status(s.pid(), s.status, s.killed_for_timeout, s.ran_for, s.prepare_time));
    }
    fail();
  }

  void fail() {
    if (source_->output.captured) detail::child_error_access::attach(*error_, source_->output);
    state_ = state::failed;
  }

  void fail_malformed(std::string defect) {
    child_error::details d;
    d.why = child_error::reason::malformed;
    d.pid = source_->pid();
    // The reader names the type it found the defect in; say which value it was in.
    const std::string whole = std::string(detail::type_name<T>()) + ":";
    d.defect = defect.compare(0, whole.size(), whole) == 0 ? std::move(defect) : whole + " " + defect;
    error_.emplace(std::move(d));
    fail();
  }

  // Reads the value back from its wire form: in the frame, or in the memfd
  // the frame names. False (and why) if it does not check out.
  bool decode(const detail::frame_view& frame, std::string& defect) requires decoded {
    detail::value_memfd_view view;
    const unsigned char* data = frame.payload;
    std::size_t size = frame.size;
    if (frame.kind == detail::frame_kind::value_in_memfd) {
      std::uint64_t claimed = 0;
      std::memcpy(&claimed, frame.payload, sizeof claimed);
      if (!view.open(source_->value_fd.get(), claimed, defect)) return false;
      data = view.data();
      size = view.size();
    }
    detail::wire_reader in(data, size);
    detail::wire_slot<T> slot;
    if (!detail::read_wire(in, slot)) {
      defect = in.defect();
      return false;
    }
    storage_.value = std::make_unique<T>(std::move(slot.get()));
    source_->value_fd.reset(); // its pages are freed now, not with the handle
    return true;
  }

  T* value_pointer() noexcept requires(!std::is_void_v<T>) {
    if constexpr (decoded) {
      return storage_.value.get();
    } else if constexpr (in_region) {
      return std::launder(static_cast<T*>(source_->region.data()));
    } else {
      return std::launder(reinterpret_cast<T*>(storage_.bytes));
    }
  }

  std::shared_ptr<detail::result_source> source_; // a fork_call child's (sole owner) or a pool task's
  [[no_unique_address]] storage_type storage_{};
  std::optional<child_error> error_;
  state state_ = state::empty;
};

} // namespace forksafe

#include "fork_call.hpp" // fork_call lived here: code that included only this header still finds it

#endif // FORKSAFE_PROCESS_RESULT_HPP
