// SPDX-License-Identifier: MIT
//
// forksafe/atfork_registry.hpp: fork handlers that can be removed, are run
// in a defined order, and can back out of a prepare that cannot finish.
//
// Defines:
//   atfork_registry    the one place in the process where fork handlers live
//                      (installs a single pthread_atfork triple on first use).
//   atfork_handle      move-only RAII registration; destroying it unregisters.
//   atfork_prepare     the type-erased prepare handler (returns void or bool).
//   fork_generation()  0 in the original process, +1 in each forked child.
//
// Why not pthread_atfork directly: it can only add (a library that is
// unloaded, or an object that dies, leaves a handler behind), a prepare has no
// way to say "not now", and when several libraries each take their own locks
// in prepare, the fixed order deadlocks against a thread that holds one lock
// and wants another. Here a prepare that returns false makes the registry
// undo the pass (parent handlers of what was prepared, newest first), back
// off and try again, so handlers can try_lock without knowing each other.
//
// What runs where:
//   prepare  in the forking thread before fork(), newest registration first.
//   parent   in the forking thread after fork() in the parent (also when
//            fork() failed), oldest registration first.
//   child    in the only thread of the child, oldest registration first,
//            after fork_generation() was incremented. A child handler should
//            only release or reset: taking any other lock can hang.
// Handlers run only on fork(). vfork(), posix_spawn(), clone() and _Fork()
// skip them (libc runs no atfork handlers on those paths); code that must
// notice any new process compares fork_generation() or getpid().

#ifndef FORKSAFE_ATFORK_REGISTRY_HPP
#define FORKSAFE_ATFORK_REGISTRY_HPP

#include "detail/config.hpp"
#include "detail/owner_lock.hpp"
#include "detail/thread_identity.hpp"

#include <atomic>      // fork generation, live count
#include <cerrno>      // errno is saved around handlers
#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t
#include <cstdio>      // the terminate message
#include <exception>   // std::terminate
#include <functional>  // std::function: the type-erased handlers
#include <type_traits> // handler constraints
#include <utility>     // std::exchange

#include <pthread.h> // pthread_atfork
#include <sched.h>   // sched_yield
#include <time.h>    // nanosleep

namespace forksafe {

namespace detail {
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint64_t> fork_generation_{0};
} // namespace detail

/// The number of forks between the original process and this one: 0 in the
/// original process, 1 in its children, 2 in grandchildren. Incremented in a
/// child by the registry before any user child handler runs. One relaxed
/// atomic load: cheap enough to check on every use of a lazily reset object.
/// Only fork() increments it (see the file comment for paths that do not).
[[nodiscard]] inline std::uint64_t fork_generation() noexcept {
  return detail::fork_generation_.load(std::memory_order_relaxed);
}

/// A prepare handler: empty ("none"), or a callable returning void (always
/// ready) or bool (false: "cannot get ready now, undo and retry").
///
/// Converts implicitly from nullptr, a null function pointer or an empty
/// std::function (all three: empty), and from a copy-constructible callable
/// taking no arguments that returns void or exactly bool (anything else does
/// not compile). It is stored in a std::function: may throw std::bad_alloc.
class atfork_prepare {
public:
  atfork_prepare() noexcept = default;
  atfork_prepare(std::nullptr_t) noexcept {}

  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, atfork_prepare> && std::is_invocable_v<F&> &&
             (std::is_void_v<std::invoke_result_t<F&>> ||
              std::is_same_v<std::invoke_result_t<F&>, bool>))
  atfork_prepare(F&& f) { // NOLINT: implicit, like std::function
    if constexpr (std::is_constructible_v<bool, const std::remove_cvref_t<F>&>) {
      if (!static_cast<bool>(f)) return; // a null function pointer or an empty std::function
    }
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      fn_ = [g = std::forward<F>(f)]() mutable {
        g();
        return true;
      };
    } else {
      fn_ = std::forward<F>(f);
    }
  }

  /// True unless empty.
  [[nodiscard]] explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  /// Runs the handler: its result, or true when empty or when it returns
  /// void. Lets its exception through (the registry then terminates).
  bool operator()() { return fn_ ? fn_() : true; }

private:
  std::function<bool()> fn_;
};

class atfork_registry;

namespace detail {

// One registration. Owned by the registry's list; an atfork_handle points at it.
// The fork path only reads entries: after fork() every page is write-protected
// in parent and child, and one write per entry would cost a page fault per
// page (1,000 handlers: +80% on a bare fork). So "prepared" is not stored; it
// follows from the pass (all-or-nothing), and only the rare changes made from
// inside a handler write flags.
struct atfork_entry {
  atfork_prepare prepare;
  std::function<void()> parent;
  std::function<void()> child;
  atfork_entry* prev = nullptr;
  atfork_entry* next = nullptr;
  bool removed = false;           // removed from inside a handler: unlinked when the fork ends
  bool unprepared = false;        // removed before its prepare ran: gets no parent/child call
  bool added_during_fork = false; // added from inside a handler: takes part from the next fork on
};

} // namespace detail

/// A registration in the atfork_registry. Move-only; destroying it or calling
/// reset() unregisters. When that returns, the handlers can no longer run
/// (it waits for a fork in progress on another thread to finish), so what
/// they capture may be destroyed right after. Exception: called from inside a
/// fork handler on the forking thread, it returns at once, and an entry whose
/// prepare already ran in this fork still gets its parent or child call
/// before fork() returns, so locks stay balanced: keep what such a handler
/// captures alive until then.
///
/// A default-constructed or moved-from handle holds nothing. Move-assigning
/// first unregisters what the target held. Thread-safety: one thread at a
/// time per handle. In a forked child the handle refers to the child's copy
/// of the registration: reset() there unregisters it from the child's
/// registry only.
class [[nodiscard]] atfork_handle {
public:
  atfork_handle() noexcept = default;
  atfork_handle(atfork_handle&& other) noexcept : entry_(std::exchange(other.entry_, nullptr)) {}
  atfork_handle& operator=(atfork_handle&& other) noexcept {
    if (this != &other) {
      reset();
      entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
  }
  atfork_handle(const atfork_handle&) = delete; // one owner unregisters
  atfork_handle& operator=(const atfork_handle&) = delete;
  ~atfork_handle() { reset(); }

  /// Unregisters (see the class comment for when it returns; it blocks while
  /// another thread runs fork handlers). Idempotent.
  inline void reset() noexcept;

  /// True while registered.
  [[nodiscard]] explicit operator bool() const noexcept { return entry_ != nullptr; }

private:
  friend class atfork_registry;
  explicit atfork_handle(detail::atfork_entry* e) noexcept : entry_(e) {}
  detail::atfork_entry* entry_ = nullptr;
};

/// The process-wide registry of fork handlers.
///
/// Thread-safety: every member may be called from any thread. add() and
/// removal wait while another thread runs fork handlers: during each prepare
/// pass, and from a successful pass to the end of its parent handlers. From
/// inside a handler, on the forking thread, add() and removal never wait.
/// So a handler must not wait for another thread that adds or removes an
/// entry, nor call fork(): either deadlocks.
///
/// Blocking: fork() returns only after a prepare pass in which every prepare
/// handler returned true. It retries without limit, backing off between
/// passes (sched_yield 8 times, then sleeps of 1 µs doubling to ~1 ms), so a
/// prepare that keeps refusing stalls the fork for as long. errno is saved
/// and restored around the handlers (fork's own errno when fork() failed).
///
/// In a forked child the registry is a copy of the parent's: every entry
/// registered there is still registered, and runs on the child's own forks.
///
/// Exactly one exists per process, also when these headers are compiled into
/// several shared libraries: instance() and the state it uses have default
/// visibility (even under -fvisibility=hidden), so the dynamic linker binds
/// every library to one copy. A linker version script that makes them local,
/// or -Bsymbolic, splits it: each library then has its own registry, its own
/// pthread_atfork triple and its own retry loop; forks still run every
/// handler, but backing out no longer spans libraries. It is never destroyed,
/// so forks during static destruction still work.
class FORKSAFE_PROCESS_UNIQUE atfork_registry {
public:
  /// The registry. The first call (made during static initialisation in
  /// every program that includes this header) allocates it, which may throw
  /// std::bad_alloc, and installs its pthread_atfork handlers. Thread-safe.
  static atfork_registry& instance() {
    static atfork_registry* const registry = new atfork_registry(); // leaky: outlives static destructors
    return *registry;
  }

  atfork_registry(const atfork_registry&) = delete; // one per process
  atfork_registry& operator=(const atfork_registry&) = delete;

  /// Registers fork handlers; any may be empty ({} or nullptr). The entry is
  /// the newest: its prepare runs first, its parent and child handlers last.
  /// Keep the returned handle: destroying it unregisters. Allocates (a fork
  /// never does). Blocks while another thread runs fork handlers (see the
  /// class comment); called from inside a handler on the forking thread, it
  /// does not block and the entry takes part from the next fork on. A handler
  /// that throws makes the registry print a message naming it to stderr and
  /// call std::terminate: an exception cannot cross fork(). Throws
  /// std::bad_alloc.
  atfork_handle add(atfork_prepare prepare, std::function<void()> parent, std::function<void()> child) {
    auto* e = new detail::atfork_entry{std::move(prepare), std::move(parent), std::move(child)};
    if (forking_thread_) {
      e->added_during_fork = true; // we hold lock_: this thread is running the handlers
      changed_in_fork_ = true;
      link(e);
    } else {
      lock_.lock(detail::this_thread_id());
      link(e);
      lock_.unlock();
    }
    return atfork_handle(e);
  }

  /// The number of registered entries (best effort while others add or remove).
  [[nodiscard]] std::size_t size() const noexcept { return live_.load(std::memory_order_relaxed); }

private:
  friend class atfork_handle;

  atfork_registry() noexcept {
    head_.next = head_.prev = &head_;
    ::pthread_atfork(&on_prepare, &on_parent, &on_child);
  }

  void link(detail::atfork_entry* e) noexcept {
    e->prev = head_.prev;
    e->next = &head_;
    head_.prev->next = e;
    head_.prev = e;
    live_.fetch_add(1, std::memory_order_relaxed);
  }

  static void unlink(detail::atfork_entry* e) noexcept {
    e->prev->next = e->next;
    e->next->prev = e->prev;
  }

  void remove(detail::atfork_entry* e) noexcept {
    live_.fetch_sub(1, std::memory_order_relaxed);
    if (forking_thread_) {
      // Unlinked when the fork ends. An entry whose prepare already ran in
      // this pass still gets its parent/child call; one not yet reached never
      // runs.
      e->removed = true;
      e->unprepared = !e->added_during_fork && !prepared_in_this_pass(e);
      changed_in_fork_ = true;
      return;
    }
    lock_.lock(detail::this_thread_id());
    unlink(e);
    lock_.unlock();
    delete e;
  }

  // Called on the forking thread only. During a prepare pass the entries
  // from cursor_ (whose prepare is running) to the newest are prepared; once
  // the pass has succeeded (cursor_ == nullptr) all of them are.
  bool prepared_in_this_pass(const detail::atfork_entry* e) const noexcept {
    if (cursor_ == nullptr) return !e->unprepared;
    for (const detail::atfork_entry* p = cursor_; p != &head_; p = p->next) {
      if (p == e) return true;
    }
    return false;
  }

  static bool takes_part(const detail::atfork_entry* e) noexcept {
    return !e->unprepared && !e->added_during_fork;
  }

  // Runs `fn` and ends the process if it throws: unwinding through fork() is undefined.
  template <class Fn>
  static auto call(Fn& fn, const char* which) noexcept {
    try {
      return fn();
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "forksafe::atfork_registry: a %s fork handler threw: %s; calling std::terminate\n",
                   which, ex.what());
    } catch (...) {
      std::fprintf(stderr, "forksafe::atfork_registry: a %s fork handler threw; calling std::terminate\n", which);
    }
    std::terminate();
  }

  // One prepare pass, newest first. On a refusal, undoes what it prepared
  // (parent handlers, in reverse order of preparation) and returns false.
  bool prepare_pass() noexcept {
    for (detail::atfork_entry* e = head_.prev; e != &head_; e = e->prev) {
      if (e->removed || e->added_during_fork) continue;
      cursor_ = e;
      if (!call(e->prepare, "prepare")) {
        for (detail::atfork_entry* p = e->next; p != &head_; p = p->next) {
          if (takes_part(p) && p->parent) call(p->parent, "parent");
        }
        cursor_ = nullptr;
        return false;
      }
    }
    cursor_ = nullptr;
    return true;
  }

  // Drops entries removed from inside handlers; when the fork is over, also
  // admits entries added there. Writes entries only if a handler changed any.
  void settle(bool fork_over) noexcept {
    if (!changed_in_fork_) return;
    bool still_flagged = false;
    for (detail::atfork_entry* e = head_.next; e != &head_;) {
      detail::atfork_entry* next = e->next;
      if (e->removed) {
        unlink(e);
        delete e;
      } else if (e->added_during_fork) {
        if (fork_over) {
          e->added_during_fork = false;
        } else {
          still_flagged = true;
        }
      }
      e = next;
    }
    changed_in_fork_ = still_flagged;
  }

  static void back_off(unsigned attempt) noexcept {
    if (attempt < 8) {
      ::sched_yield();
      return;
    }
    // 1 µs doubling to 1 ms: long enough for a holder to finish its critical section.
    const unsigned shift = attempt - 8 < 10 ? attempt - 8 : 10;
    const timespec ts{0, 1000L << shift};
    ::nanosleep(&ts, nullptr);
  }

  static void on_prepare() noexcept {
    const int saved = errno;
    atfork_registry& r = instance();
    for (unsigned attempt = 0;; ++attempt) {
      r.lock_.lock(detail::this_thread_id());
      r.forking_thread_ = true;
      if (r.prepare_pass()) break; // lock_ stays held until the parent or child handler
      r.settle(false);
      r.forking_thread_ = false;
      r.lock_.unlock();
      back_off(attempt);
    }
    errno = saved;
  }

  static void on_parent() noexcept {
    const int saved = errno; // fork's own errno when fork() failed
    atfork_registry& r = instance();
    r.run_after_fork(&detail::atfork_entry::parent, "parent");
    r.lock_.unlock();
    errno = saved;
  }

  static void on_child() noexcept {
    const int saved = errno;
    detail::fork_generation_.fetch_add(1, std::memory_order_relaxed);
    detail::record_fork_survivor();
    atfork_registry& r = instance();
    r.run_after_fork(&detail::atfork_entry::child, "child");
    r.lock_.reset_in_child(); // threads that waited on it are gone
    errno = saved;
  }

  void run_after_fork(std::function<void()> detail::atfork_entry::*which, const char* name) noexcept {
    for (detail::atfork_entry* e = head_.next; e != &head_; e = e->next) {
      if (takes_part(e) && e->*which) call(e->*which, name);
    }
    settle(true);
    forking_thread_ = false;
  }

  detail::owner_lock lock_;
  detail::atfork_entry head_; // sentinel of the circular list, oldest first
  std::atomic<std::size_t> live_{0};
  detail::atfork_entry* cursor_ = nullptr; // the entry whose prepare runs (forking thread only)
  bool changed_in_fork_ = false;           // a handler added or removed an entry (forking thread only)
  // True while the thread holding lock_ runs handlers. Read unlocked only by
  // the thread that may be that thread; written only under lock_.
  static inline thread_local bool forking_thread_ = false;
};

inline void atfork_handle::reset() noexcept {
  if (entry_ != nullptr) atfork_registry::instance().remove(std::exchange(entry_, nullptr));
}

namespace detail {
// Installs the registry while the program starts, in every program that
// includes this header, so fork_generation() counts from the first fork.
inline const bool registry_installed_ = (atfork_registry::instance(), true);
} // namespace detail

} // namespace forksafe

#endif // FORKSAFE_ATFORK_REGISTRY_HPP
