// SPDX-License-Identifier: MIT
//
// forksafe/atfork_registry.hpp: fork handlers that can be removed, run in a
// defined order, back out of a prepare that cannot finish, and never make a
// fork wait without bound.
//
// Defines:
//   atfork_registry       the one place in the process where fork handlers live.
//   atfork_handle         move-only RAII registration; destroying it unregisters.
//   atfork_prepare        a non-blocking prepare handler (returns void or bool).
//   atfork_handlers       the general form of an entry: a name, a try-prepare, a
//                         blocking prepare with a deadline, parent and child.
//   atfork_guard_traits   how guard() takes and gives back a lock of a given type.
//   fork_report           what a slow fork waited for (on_slow_fork).
//   fork_generation()     0 in the original process, +1 in each forked child.
//
// Why not pthread_atfork directly: it can only add (a library that is
// unloaded, or an object that dies, leaves a handler behind); a prepare has
// no way to say "not now"; when several libraries each take their own locks
// in prepare, the fixed order deadlocks against a thread that holds one and
// wants another; and nothing bounds how long a fork waits.
//
// How a fork is prepared. A pass calls every entry's try-prepare, newest
// first. If one refuses, the pass undoes what it prepared (parent handlers,
// newest first, as folly does), then blocks on the refuser's blocking
// prepare while holding nothing else, keeps it, and tries the rest again:
// the algorithm of std::lock, which gets through where retrying try-locks
// starves (a holder that unlocks and relocks at once leaves a try-lock a
// window of nanoseconds). An entry without a blocking prepare makes the
// registry back off (yield, then 1 µs doubling to 1 ms) and retry instead.
// What stays ordered: prepare passes run newest first, parent and child
// handlers oldest first. What does not: after a refusal, the refuser is
// prepared first, out of order, so a handler must not rely on another
// entry's prepare having run before its own.
//
// How long a fork may wait: at most prepare_timeout() (10 s unless the
// program calls set_prepare_timeout() or FORKSAFE_PREPARE_TIMEOUT_MS is set).
// Then fork() goes on without the entries that still refuse: they get no
// parent or child call; the child runs their child_unprepared handling
// (quiesce locks still held by a thread that did not survive are poisoned:
// their lock() throws fork_poisoned there); a line starting "forksafe:" on
// stderr names them. forksafe's own forks (fork_call, process_pool) prepare
// before calling fork() and give up instead: no child is made, and the
// error names what held the fork back.
//
// What runs where:
//   prepare  in the forking thread before fork() (see above).
//   parent   in the forking thread after fork() in the parent (also when
//            fork() failed), oldest registration first.
//   child    in the only thread of the child, oldest registration first,
//            after fork_generation() was incremented. A child handler should
//            only release or reset: taking any other lock can hang.
// Handlers run only on fork(). vfork(), posix_spawn(), clone() and _Fork()
// skip them (libc runs no atfork handlers on those paths); so does a fork
// made on a thread that is already inside fork() (a signal handler that
// forks): its child may call only async-signal-safe functions, as after
// _Fork(). Code that must notice any new process compares
// fork_generation() or getpid().

#ifndef FORKSAFE_ATFORK_REGISTRY_HPP
#define FORKSAFE_ATFORK_REGISTRY_HPP

#include "detail/config.hpp"
#include "detail/guard_traits.hpp"
#include "detail/process_hub.hpp"
#include "detail/registry.hpp"
#include "detail/registry_core.hpp"
#include "detail/registry_entry.hpp"

#include <chrono>      // deadlines, durations
#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t
#include <cstdio>      // the terminate message
#include <exception>   // std::terminate
#include <functional>  // std::function: the type-erased handlers
#include <new>         // placement new: the registry object in the hub
#include <stdexcept>   // std::invalid_argument, std::logic_error
#include <string>      // names
#include <type_traits> // handler constraints
#include <utility>     // std::exchange, std::move
#include <vector>      // fork_report

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// The number of forks between the original process and this one: 0 in the
/// original process, 1 in its children, 2 in grandchildren. Incremented in a
/// child by the registry before any user child handler runs. Two loads:
/// cheap enough to check on every use of a lazily reset object. Only fork()
/// increments it (see the file comment for paths that do not).
[[nodiscard]] inline std::uint64_t fork_generation() noexcept {
  return detail::hub().fork_generation.load(std::memory_order_relaxed);
}

/// A non-blocking prepare handler: empty ("none"), or a callable returning
/// void (always ready) or bool (false: "cannot get ready now": undo, wait or
/// back off, retry).
///
/// Converts implicitly from nullptr, a null function pointer or an empty
/// std::function (all three: empty), and from a copy-constructible callable
/// taking no arguments that returns void or exactly bool (anything else does
/// not compile). It is stored in a std::function: may throw std::bad_alloc.
class atfork_prepare {
public:
  atfork_prepare() noexcept = default;
  /// Empty.
  atfork_prepare(std::nullptr_t) noexcept {}

  /// Holds `f`; empty when `f` is a null function pointer or an empty std::function.
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, atfork_prepare> && std::is_invocable_v<F&> &&
           (std::is_void_v<std::invoke_result_t<F&>> || std::is_same_v<std::invoke_result_t<F&>, bool>))
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

/// The general form of a registry entry; atfork_registry::add(atfork_handlers).
/// Every member may be empty. A `prepare_until` needs a `try_prepare`.
struct atfork_handlers {
  /// Shown in slow-fork reports and on stderr (any length; reports cut it to
  /// 63 bytes). Empty: "(unnamed)".
  std::string name{};
  /// Gets ready without blocking: true when ready, false for "not now".
  atfork_prepare try_prepare{};
  /// Gets ready, blocking as long as it must but not past the deadline; true
  /// when ready, false when the deadline came first. Called only after
  /// try_prepare refused and every other entry was undone, so it may block
  /// (lock a mutex) without deadlocking against another entry. Empty: the
  /// registry backs off and retries try_prepare instead.
  std::function<bool(std::chrono::steady_clock::time_point deadline)> prepare_until{};
  /// After fork() in the parent, and to undo a prepare of a pass that backs out.
  std::function<void()> parent{};
  /// After fork() in the child.
  std::function<void()> child{};
  /// In the child of a fork that went on without this entry (its prepare
  /// timed out): what to do instead of child (which does not run).
  std::function<void()> child_unprepared{};
};

/// How atfork_registry::guard() handles a lock of type L. Specialise it for
/// a lock type of yours (same members; every one is called by the registry
/// on the forking thread, or in the child for release_in_child).
///
/// The default: try_lock() to try; to wait, try_lock_until(deadline) if L has
/// it, a timed lock on its pthread mutex if native_handle() returns one,
/// libstdc++'s std::shared_mutex on its pthread_rwlock_t, and otherwise a
/// plain lock() (which the prepare timeout cannot interrupt). unlock() in the
/// parent. In the child, unlock(), except for std::recursive_mutex,
/// std::recursive_timed_mutex, std::shared_mutex and std::shared_timed_mutex,
/// whose unlock fails in a child (glibc checks the owner by kernel thread id,
/// which is new there): they are constructed anew in place, as glibc does for
/// its own locks (the data is whole: the fork held them). A lock the forking
/// thread itself holds (told for pthread-based mutexes on glibc) is not
/// taken: it stays held by that thread in parent and child.
template <class L>
struct atfork_guard_traits {
  /// True when the forking thread itself holds `l`: it is then not taken.
  static bool held_by_forking_thread(L& l) noexcept { return detail::held_by_caller(l); }
  /// Takes `l` without blocking; true when taken.
  static bool try_lock(L& l) { return l.try_lock(); }
  /// Takes `l`, waiting at most until `deadline`; true when taken.
  static bool lock_until(L& l, std::chrono::steady_clock::time_point deadline) {
    return detail::lock_until(l, deadline);
  }
  /// Releases `l` in the parent after fork(), or to undo a pass that backs out.
  static void unlock_in_parent(L& l) { l.unlock(); }
  /// Releases `l` in the child (or constructs it anew, see above).
  static void release_in_child(L& l) { detail::release_in_child(l); }
};

/// What a slow fork waited for; see atfork_registry::on_slow_fork.
struct fork_report {
  /// One entry that refused.
  struct blocker {
    std::string name;   ///< the entry's name (cut to 63 bytes), "(unnamed)" without one
    std::string detail; ///< what it says of itself: a quiesce lock's address and holder
    /// How many times it refused in this fork.
    unsigned refusals = 0;
    std::chrono::nanoseconds held_back{}; ///< time blocked on it or backing off after it refused
  };
  std::chrono::nanoseconds waited{}; ///< from the start of preparation to its end
  bool gave_up = false;              ///< the prepare timeout passed
  bool forksafe_fork = false;        ///< fork_call or process_pool's fork: given up means not made
  std::vector<blocker> blockers;     ///< in the order they first refused (at most 4)
  std::vector<std::string> left_out; ///< gave up in fork(): the entries it went on without
};

namespace detail {

[[noreturn]] inline void handler_threw(const char* which, const char* name, const char* what) noexcept {
  std::fprintf(stderr, "forksafe::atfork_registry: the %s handler of '%s' threw%s%s; calling std::terminate\n", which,
               *name != '\0' ? name : "(unnamed)", what != nullptr ? ": " : "", what != nullptr ? what : "");
  std::terminate();
}

// Runs a handler; an exception cannot cross fork(), so it ends the process.
template <class Fn>
auto call_handler(Fn&& fn, const char* which, const char* name) noexcept {
  try {
    return fn();
  } catch (const std::exception& ex) {
    handler_threw(which, name, ex.what());
  } catch (...) {
    handler_threw(which, name, nullptr);
  }
}

inline void write_text(const entry_args& a, const char* text) noexcept {
  if (a.text != nullptr && a.text_capacity != 0) std::snprintf(a.text, a.text_capacity, "%s", text);
}

// An entry made by add(): atfork_handlers behind the registry's interface.
struct handlers_entry : registry_entry {
  atfork_handlers h;

  const char* name;

  inline explicit handlers_entry(atfork_handlers&& handlers);
  static const char* name_of(const registry_entry& b) noexcept { return static_cast<const handlers_entry&>(b).name; }
  void set_caps() noexcept {
    name = h.name.c_str();
    caps = (h.try_prepare ? entry_can_try : 0U) | (h.prepare_until ? entry_can_wait : 0U) |
           (h.parent ? entry_has_parent : 0U) | (h.child ? entry_has_child : 0U) |
           (h.child_unprepared ? entry_has_unprepared : 0U);
  }

  static bool run(registry_entry& base, entry_op op, const entry_args& a) noexcept {
    auto& e = static_cast<handlers_entry&>(base);
    switch (op) {
    case entry_op::try_prepare: return call_handler([&] { return e.h.try_prepare(); }, "prepare", e.name);
    case entry_op::prepare_until: {
      const std::chrono::steady_clock::time_point t{std::chrono::nanoseconds(a.deadline_ns)};
      return call_handler([&] { return e.h.prepare_until(t); }, "prepare_until", e.name);
    }
    case entry_op::parent: call_handler([&] { e.h.parent(); }, "parent", e.name); return true;
    case entry_op::child: call_handler([&] { e.h.child(); }, "child", e.name); return true;
    case entry_op::child_unprepared:
      call_handler([&] { e.h.child_unprepared(); }, "child_unprepared", e.name);
      return true;
    case entry_op::prepare_partial:
    case entry_op::describe: return true;
    case entry_op::destroy: delete &e; return true;
    }
    return true;
  }
};

// An entry made by add(prepare, parent, child): the three handlers only, so
// a registry of many stays compact (the fork reads every entry twice).
struct triple_entry : registry_entry {
  std::function<void()> on_child; // first: in the base's cache line (see registry_entry)
  std::function<void()> on_parent;
  atfork_prepare prepare;
  static constexpr const char* name = "";

  inline triple_entry(atfork_prepare p, std::function<void()> pa, std::function<void()> ch);
  void set_caps() noexcept {
    caps = (prepare ? entry_can_try : 0U) | (on_parent ? entry_has_parent : 0U) | (on_child ? entry_has_child : 0U);
  }

  static bool try_fast(registry_entry& base) noexcept {
    auto& e = static_cast<triple_entry&>(base);
    return call_handler([&] { return e.prepare(); }, "prepare", e.name);
  }
  static void after_fast(registry_entry& base, bool in_child) noexcept {
    auto& e = static_cast<triple_entry&>(base);
    if (in_child) {
      call_handler([&] { e.on_child(); }, "child", e.name);
    } else {
      call_handler([&] { e.on_parent(); }, "parent", e.name);
    }
  }

  static bool run(registry_entry& base, entry_op op, const entry_args&) noexcept {
    auto& e = static_cast<triple_entry&>(base);
    switch (op) {
    case entry_op::try_prepare: return call_handler([&] { return e.prepare(); }, "prepare", e.name);
    case entry_op::parent: call_handler([&] { e.on_parent(); }, "parent", e.name); return true;
    case entry_op::child: call_handler([&] { e.on_child(); }, "child", e.name); return true;
    case entry_op::destroy: delete &e; return true;
    case entry_op::prepare_until:
    case entry_op::prepare_partial:
    case entry_op::child_unprepared:
    case entry_op::describe: return true;
    }
    return true;
  }
};

// An entry made by guard(): one lock, through atfork_guard_traits<L>.
template <class L>
struct guard_entry : registry_entry {
  using traits = atfork_guard_traits<L>;
  L* lock;
  std::string label;
  const char* name;
  bool skipped = false; // this fork: the forking thread holds it; written only then

  guard_entry(L& l, std::string n);
  static const char* name_of(const registry_entry& b) noexcept { return static_cast<const guard_entry&>(b).name; }
  void set_caps() noexcept {
    name = label.c_str();
    caps = entry_can_try | entry_can_wait | entry_has_parent | entry_has_child | entry_can_describe;
  }

  static bool run(registry_entry& base, entry_op op, const entry_args& a) noexcept {
    auto& e = static_cast<guard_entry&>(base);
    L& l = *e.lock;
    switch (op) {
    case entry_op::try_prepare:
      return call_handler(
          [&] {
            if (traits::held_by_forking_thread(l)) {
              if (!e.skipped) e.skipped = true;
              return true;
            }
            if (e.skipped) e.skipped = false;
            return traits::try_lock(l);
          },
          "prepare", e.name);
    case entry_op::prepare_until: {
      const std::chrono::steady_clock::time_point t{std::chrono::nanoseconds(a.deadline_ns)};
      return call_handler([&] { return traits::lock_until(l, t); }, "prepare_until", e.name);
    }
    case entry_op::parent:
      if (!e.skipped) call_handler([&] { traits::unlock_in_parent(l); }, "parent", e.name);
      return true;
    case entry_op::child:
      if (!e.skipped) call_handler([&] { traits::release_in_child(l); }, "child", e.name);
      return true;
    case entry_op::prepare_partial:
    case entry_op::child_unprepared: return true;
    case entry_op::describe: write_text(a, "a guarded lock another thread holds"); return true;
    case entry_op::destroy: delete &e; return true;
    }
    return true;
  }
};

// The tables the registry calls through (hidden: one per shared object, so
// nothing here keeps a plugin from being unloaded).
FORKSAFE_HIDDEN inline constexpr entry_type handlers_entry_kind{&handlers_entry::run, nullptr, nullptr,
                                                                &handlers_entry::name_of};
FORKSAFE_HIDDEN inline constexpr entry_type triple_entry_kind{&triple_entry::run, &triple_entry::try_fast,
                                                              &triple_entry::after_fast, nullptr};
template <class L>
FORKSAFE_HIDDEN inline constexpr entry_type guard_entry_kind{&guard_entry<L>::run, nullptr, nullptr,
                                                             &guard_entry<L>::name_of};

inline handlers_entry::handlers_entry(atfork_handlers&& handlers) : h(std::move(handlers)) {
  type = &handlers_entry_kind;
  set_caps();
}
inline triple_entry::triple_entry(atfork_prepare p, std::function<void()> pa, std::function<void()> ch)
    : on_child(std::move(ch)), on_parent(std::move(pa)), prepare(std::move(p)) {
  type = &triple_entry_kind;
  set_caps();
}
template <class L>
guard_entry<L>::guard_entry(L& l, std::string n) : lock(&l), label(std::move(n)) {
  type = &guard_entry_kind<L>;
  set_caps();
}

// The slow-fork callback, held by the registry.
struct report_callback {
  std::function<void(const fork_report&)> fn;

  static fork_report to_report(const fork_stats& s) {
    fork_report r;
    r.waited = std::chrono::nanoseconds(s.waited_ns);
    r.gave_up = s.gave_up;
    r.forksafe_fork = s.ahead;
    for (std::uint32_t i = 0; i < s.blocker_count; ++i) {
      const blocker_stat& b = s.blockers[i];
      r.blockers.push_back({b.name, b.detail, b.refusals, std::chrono::nanoseconds(b.held_back_ns)});
    }
    for (std::uint32_t i = 0; i < s.unprepared_count; ++i) r.left_out.emplace_back(s.unprepared[i]);
    return r;
  }

  static void run(const fork_stats& s, void* self) noexcept {
    try {
      static_cast<report_callback*>(self)->fn(to_report(s));
    } catch (...) {
      std::fputs("forksafe: the slow-fork callback threw; ignored\n", stderr);
    }
  }
};

} // namespace detail

/// A registration in the atfork_registry. Move-only; destroying it or calling
/// reset() unregisters. When that returns, the handlers can no longer run
/// (it waits for a fork in progress on another thread to leave the entry),
/// so what they capture may be destroyed right after. Called from inside a
/// fork handler on the forking thread, it does not wait: an entry whose
/// prepare already ran in this fork gets its parent call (or, after fork(),
/// its parent or child call) at once, before reset() returns, so locks stay
/// balanced; one whose prepare has not run is not called at all. Either way
/// the entry is destroyed before reset() returns (its own handler, removing
/// itself, finishes first).
///
/// A default-constructed or moved-from handle holds nothing. Move-assigning
/// first unregisters what the target held. Thread-safety: one thread at a
/// time per handle. In a forked child the handle refers to the child's copy
/// of the registration: reset() there unregisters it from the child's
/// registry only.
class [[nodiscard]] atfork_handle {
public:
  atfork_handle() noexcept = default;
  /// Takes over `other`'s registration; `other` then holds nothing.
  atfork_handle(atfork_handle&& other) noexcept : entry_(std::exchange(other.entry_, nullptr)) {}
  /// Unregisters what this handle held, then takes over `other`'s registration.
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

  /// Unregisters (see the class comment for when it returns). Idempotent.
  void reset() noexcept {
    if (entry_ != nullptr) detail::registry_remove(*std::exchange(entry_, nullptr));
  }

  /// True while registered.
  [[nodiscard]] explicit operator bool() const noexcept { return entry_ != nullptr; }

private:
  friend class atfork_registry;
  explicit atfork_handle(detail::registry_entry* e) noexcept : entry_(e) {}
  detail::registry_entry* entry_ = nullptr;
};

/// The process-wide registry of fork handlers.
///
/// Thread-safety: every member may be called from any thread. add() and
/// removal wait while another thread runs fork handlers (not while that
/// fork blocks on an entry or backs off). From inside a handler, on the
/// forking thread, add() and removal never wait: a new entry takes part from
/// the next fork on; see atfork_handle for removal.
///
/// errno is saved and restored around the handlers (fork's own errno when
/// fork() failed). In a forked child the registry is a copy of the parent's:
/// every entry registered there is still registered, and runs on the
/// child's own forks.
///
/// Exactly one exists per process, whatever the linkage: the executable and
/// every shared library built with these headers (with or without
/// -fvisibility=hidden or -rdynamic, linked or dlopen'ed) find it through an
/// ELF note (see detail/process_hub.hpp). Handlers registered by a plugin
/// stop when it is unloaded (its static handles are destroyed), and the
/// plugin can be unloaded; the first object that installs the registry's
/// pthread_atfork handlers stays loaded (usually the executable). Copies of
/// forksafe with another hub ABI keep a registry of their own and say so on
/// stderr. It is never destroyed, so forks during static destruction work.
class atfork_registry {
public:
  /// The registry. The first call in the process (made during static
  /// initialisation in every program that includes this header) allocates
  /// it and installs its pthread_atfork handlers; if allocating fails it
  /// prints a line and calls std::terminate. Thread-safe.
  static atfork_registry& instance() noexcept {
    // All state is in the hub. This (empty) object lives in a byte the hub
    // keeps for it, so its address is the same in every shared object.
    static_assert(std::is_empty_v<atfork_registry> && std::is_trivially_destructible_v<atfork_registry>);
    return *::new (static_cast<void*>(&detail::registry().facade)) atfork_registry();
  }

  atfork_registry(const atfork_registry&) = delete; // one per process
  atfork_registry& operator=(const atfork_registry&) = delete;

  /// Registers fork handlers; any may be empty ({} or nullptr). The entry is
  /// the newest: its prepare runs first, its parent and child handlers last.
  /// Keep the returned handle: destroying it unregisters. A handler that
  /// throws makes the registry print a line naming it and call
  /// std::terminate: an exception cannot cross fork(). Throws std::bad_alloc.
  atfork_handle add(atfork_prepare prepare, std::function<void()> parent, std::function<void()> child) {
    auto* e = new detail::triple_entry(std::move(prepare), std::move(parent), std::move(child));
    detail::registry_add(*e);
    return atfork_handle(e);
  }

  /// Registers the general form (see atfork_handlers). Throws
  /// std::invalid_argument for a prepare_until without a try_prepare (it
  /// would be called with other entries prepared: a lock-order deadlock),
  /// std::bad_alloc.
  atfork_handle add(atfork_handlers handlers) {
    if (handlers.prepare_until && !handlers.try_prepare) {
      throw std::invalid_argument(
          "forksafe::atfork_registry::add: a prepare_until needs a try_prepare (the registry blocks only on an "
          "entry that refused, holding nothing else)");
    }
    auto* e = new detail::handlers_entry(std::move(handlers));
    detail::registry_add(*e);
    return atfork_handle(e);
  }

  /// Takes `lock` before every fork and gives it back in the parent and the
  /// child, for a lock the program does not own (a library's std::mutex,
  /// say), so a child never inherits it held by a thread that is gone. Taken
  /// with std::lock's algorithm (see the file comment) through
  /// atfork_guard_traits<Lockable>. `name` appears in slow-fork reports.
  /// Requires: `lock` outlives the handle (destroy the handle first).
  /// Throws std::bad_alloc.
  template <class Lockable>
  [[nodiscard]] atfork_handle guard(Lockable& lock, std::string name = {}) {
    auto* e = new detail::guard_entry<Lockable>(lock, std::move(name));
    detail::registry_add(*e);
    return atfork_handle(e);
  }

  /// The number of registered entries (best effort while others add or
  /// remove). forksafe's own (the quiesce locks' entry) count too.
  [[nodiscard]] std::size_t size() const noexcept { return detail::registry().live.load(std::memory_order_relaxed); }

  /// The most a fork waits for its preparation before it goes on without
  /// what still refuses (fork()) or gives up (fork_call, process_pool).
  /// 10 s unless set here or by FORKSAFE_PREPARE_TIMEOUT_MS (read once, when
  /// the registry is made; garbage is ignored with a line on stderr).
  [[nodiscard]] std::chrono::milliseconds prepare_timeout() const noexcept {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::nanoseconds(detail::registry().prepare_timeout_ns.load(std::memory_order_relaxed)));
  }
  /// Sets prepare_timeout() for forks that start from now on; a negative
  /// value is taken as zero (a fork then goes on at the first refusal).
  void set_prepare_timeout(std::chrono::milliseconds timeout) noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
    detail::registry().prepare_timeout_ns.store(ns < 0 ? 0 : ns, std::memory_order_relaxed);
  }

  /// Calls `callback` after every fork whose preparation took at least
  /// `threshold` or gave up, with what held it back; an empty callback
  /// removes it. Independently, FORKSAFE_SLOW_FORK_MS=N prints one line
  /// starting "forksafe:" on stderr for each fork that waited N ms or more;
  /// a fork that gave up is always reported there. Nothing is printed or
  /// called otherwise. The callback runs in the forking thread in the
  /// parent, after every handler (no entry is held), once fork() has made
  /// the child (or, for forksafe's own forks that gave up, instead of
  /// fork()); it must not fork (that fork would run no handlers) and should
  /// not throw (an exception is ignored). Waits for a fork in progress;
  /// throws std::logic_error when called from inside a fork handler. Keep the
  /// code of the callback loaded while it is installed. Throws std::bad_alloc.
  void on_slow_fork(std::function<void(const fork_report&)> callback, std::chrono::milliseconds threshold) {
    detail::registry_state& r = detail::registry();
    const std::uint32_t me = detail::this_thread_id();
    if (r.fork_lock.owner() == me) {
      throw std::logic_error("forksafe::atfork_registry::on_slow_fork: called from inside a fork handler");
    }
    detail::report_callback* fresh = callback ? new detail::report_callback{std::move(callback)} : nullptr;
    r.fork_lock.lock(me);
    auto* old = static_cast<detail::report_callback*>(r.callback_context);
    r.callback = fresh != nullptr ? &detail::report_callback::run : nullptr;
    r.callback_context = fresh;
    r.callback_threshold_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(threshold).count();
    r.fork_lock.unlock();
    delete old;
  }

private:
  atfork_registry() = default;
};

namespace detail {
// Installs the registry while the program starts, in every program that
// includes this header, so fork_generation() counts from the first fork.
FORKSAFE_HIDDEN inline const bool registry_installed_ = (registry(), true);
} // namespace detail

} // namespace forksafe

#endif // FORKSAFE_ATFORK_REGISTRY_HPP
