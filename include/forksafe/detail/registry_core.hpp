// SPDX-License-Identifier: MIT
//
// forksafe/detail/registry_core.hpp: the fork handler registry's state and
// passes: the entry list, the prepare passes, the after-fork calls, removal
// from inside a handler. detail/registry.hpp builds the registry on it (the
// pthread_atfork triple, preparing ahead, adding and removing). One registry_state per process, in the hub; the public face
// is atfork_registry (atfork_registry.hpp). docs/design.md explains the
// algorithm; the rules are:
//
// - A pass calls try_prepare on every entry, newest first. On a refusal it
//   undoes what it prepared (parent handlers, newest first), then, if the
//   refuser can wait (prepare_until), blocks on it while holding nothing
//   else, keeps it, and tries the rest (std::lock's algorithm); otherwise it
//   backs off and retries. The list lock is released while it blocks or
//   backs off, so other threads can add and remove entries meanwhile.
// - Forks are serialised by fork_lock, held from prepare to the end of the
//   after-fork calls. A fork begun on a thread that already holds it (a
//   signal handler that forks while its thread is inside fork()) runs no
//   handlers, as _Fork() does.
// - Preparation is bounded by the prepare timeout. fork_call and the pool
//   prepare before calling fork() (prepare_ahead) and give up cleanly; a
//   plain fork() cannot fail, so it goes on without what it could not
//   prepare, says so on stderr, and those entries get child_unprepared.
// - An entry removed from inside a handler on the forking thread gets the
//   call it is owed at once (its parent, or in the after-fork phase its
//   parent or child), inside the removal, and is destroyed before the
//   removal returns; so its code is never called after its library is gone.

#ifndef FORKSAFE_DETAIL_REGISTRY_CORE_HPP
#define FORKSAFE_DETAIL_REGISTRY_CORE_HPP

#include "config.hpp"
#include "deadlines.hpp"
#include "futex.hpp"
#include "intrusive_ring.hpp"
#include "owner_lock.hpp"
#include "process_hub.hpp"
#include "registry_entry.hpp"
#include "registry_report.hpp"

#include <algorithm> // std::min
#include <array>     // the report line
#include <atomic>    // live count, settings
#include <climits>   // INT_MAX
#include <cstddef>   // std::size_t
#include <cstdint>   // nanosecond counts
#include <cstdio>    // std::snprintf
#include <cstring>   // std::strlen
#include <ctime>     // nanosleep (POSIX: the <time.h> it includes declares it)

#include <sched.h>  // sched_yield
#include <unistd.h> // write

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {
/// The prepare timeout used when neither the program nor the environment sets one.
inline constexpr std::int64_t default_prepare_timeout_ns = 10'000'000'000;

enum class fork_phase : std::uint32_t {
  idle,     ///< no fork
  pass,     ///< calling try_prepare (cursor)
  undo,     ///< undoing a refused pass (cursor)
  blocking, ///< in prepare_until of blocked_on, list lock released
  backoff,  ///< sleeping after a refusal, list lock released
  ready,    ///< every entry prepared (or given up on), fork() not yet returned
  ahead,    ///< prepared by prepare_ahead; the coming fork() consumes it
  after,    ///< calling parent or child handlers (cursor)
};

struct registry_state {
  owner_lock fork_lock; ///< one fork at a time; held from prepare to the end of the after-fork calls
  owner_lock list_lock; ///< the list; released by the forking thread while it blocks or backs off
  std::atomic<std::uint32_t> blocked_seq{0}; ///< changes when blocked_on is cleared (a futex)
  registry_entry head;                       ///< sentinel of the circular list, oldest first
  std::atomic<std::size_t> live{0};

  // The forking thread's state (under fork_lock; the list-related parts also under list_lock).
  fork_phase phase = fork_phase::idle;
  bool after_child = false;          ///< after phase: child handlers (else parent)
  bool changed_in_fork = false;      ///< a handler added an entry, or a fork went on without one
  registry_entry* cursor = nullptr;  ///< the entry being called
  registry_entry* refuser = nullptr; ///< undo phase: the entry that refused
  registry_entry* held = nullptr;    ///< prepared by blocking, kept into the next pass
  registry_entry* blocked_on = nullptr;
  fork_stats stats{};

  // Settings.
  std::atomic<std::int64_t> prepare_timeout_ns{default_prepare_timeout_ns};
  std::atomic<std::int64_t> stderr_threshold_ns{-1}; ///< FORKSAFE_SLOW_FORK_MS; -1: off
  std::int64_t callback_threshold_ns = -1;           ///< under fork_lock
  slow_fork_fn callback = nullptr;                   ///< under fork_lock
  void* callback_context = nullptr;
  unsigned char facade = 0; ///< storage of the (empty) atfork_registry object
};

// ---- calling entries ------------------------------------------------------

inline bool call_entry(registry_entry& e, entry_op op, std::int64_t deadline_ns = 0) noexcept {
  entry_args a;
  a.deadline_ns = deadline_ns;
  return e.type->invoke(e, op, a);
}

inline bool has(const registry_entry& e, std::uint32_t cap) noexcept { return (e.caps & cap) != 0; }

/// The entry's name for reports, "(unnamed)" without one.
inline const char* entry_name(const registry_entry& e) noexcept {
  const char* n = e.type->name != nullptr ? e.type->name(e) : nullptr;
  return n != nullptr && *n != '\0' ? n : "(unnamed)";
}

// Starts loading an entry's first two cache lines (the links, flags and the
// first handlers of its registrant's type).
inline void prefetch_entry(const registry_entry* e) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(e);
  __builtin_prefetch(reinterpret_cast<const char*>(e) + 64);
  __builtin_prefetch(reinterpret_cast<const char*>(e) + 128);
#else
  (void)e;
#endif
}

inline bool call_try_prepare(registry_entry& e) noexcept {
  return e.type->try_prepare != nullptr ? e.type->try_prepare(e) : call_entry(e, entry_op::try_prepare);
}
inline void call_after_fork(registry_entry& e, bool child) noexcept {
  if (e.type->after_fork != nullptr) {
    e.type->after_fork(e, child);
  } else {
    call_entry(e, child ? entry_op::child : entry_op::parent);
  }
}

// An entry the current fork prepares or prepared (not one added during it).
inline bool takes_part(const registry_entry& e) noexcept {
  return (e.flags & (entry_added_in_fork | entry_unprepared)) == 0;
}

// Whether `e` comes after `from` walking newest-ward (next) before the sentinel.
inline bool newer_than(const registry_entry* e, const registry_entry* from, const registry_entry* head) noexcept {
  for (const registry_entry* p = from->next; p != head; p = p->next) {
    if (p == e) return true;
  }
  return false;
}

// ---- reports --------------------------------------------------------------

inline void note_refusal(registry_state& r, registry_entry& e) noexcept {
  fork_stats& s = r.stats;
  for (std::uint32_t i = 0; i < s.blocker_count; ++i) {
    if (s.blockers[i].entry == &e) {
      ++s.blockers[i].refusals;
      return;
    }
  }
  if (s.blocker_count == fork_stats::max_blockers) return;
  blocker_stat& b = s.blockers[s.blocker_count++];
  b.entry = &e;
  b.refusals = 1;
  b.held_back_ns = 0;
  std::snprintf(b.name, sizeof b.name, "%s", entry_name(e));
  b.detail[0] = '\0';
  if (has(e, entry_can_describe)) {
    entry_args a;
    a.text = b.detail;
    a.text_capacity = sizeof b.detail;
    e.type->invoke(e, entry_op::describe, a);
  }
}

inline void add_held_back(registry_state& r, const registry_entry& e, std::int64_t ns) noexcept {
  for (std::uint32_t i = 0; i < r.stats.blocker_count; ++i) {
    if (r.stats.blockers[i].entry == &e) r.stats.blockers[i].held_back_ns += ns;
  }
}

/// Prints and calls back for a fork that was slow or gave up. Called by the
/// forking thread with fork_lock held and every entry's after-fork call done.
inline void report_fork(registry_state& r) noexcept {
  const fork_stats& s = r.stats;
  const std::int64_t to_stderr = r.stderr_threshold_ns.load(std::memory_order_relaxed);
  if (s.gave_up || (to_stderr >= 0 && s.waited_ns >= to_stderr)) {
    std::array<char, 1024> line; // format_report writes it
    format_report(s, line.data(), line.size());
    std::size_t len = std::strlen(line.data());
    const char* p = line.data();
    while (len > 0) {
      const ssize_t w = ::write(2, p, len);
      if (w <= 0) break;
      p += w;
      len -= static_cast<std::size_t>(w);
    }
  }
  if (r.callback != nullptr && (s.gave_up || s.waited_ns >= r.callback_threshold_ns)) {
    r.callback(s, r.callback_context);
  }
}

// ---- the list, outside forks ----------------------------------------------

inline void link_entry(registry_state& r, registry_entry& e, bool oldest = false) noexcept {
  ring_insert_after(oldest ? r.head : *r.head.prev, e);
  r.live.fetch_add(1, std::memory_order_relaxed);
}

inline void unlink_entry(registry_state& r, registry_entry& e) noexcept {
  ring_unlink(e);
  r.live.fetch_sub(1, std::memory_order_relaxed);
}

// ---- removal from inside a handler on the forking thread ------------------

// Whether `e` is owed a call in the current phase: it was prepared and has
// not had its parent (or, after fork(), its parent or child) yet.
inline bool owed_a_call(const registry_state& r, const registry_entry& e) noexcept {
  if (!takes_part(e)) return false;
  switch (r.phase) {
  case fork_phase::pass: return &e == r.held || newer_than(&e, r.cursor, &r.head);
  case fork_phase::undo:
    // Undo runs newest first down to the refuser, then on to `held` (which
    // it clears once undone): owed are those it has not reached.
    return &e == r.held || (newer_than(&e, r.refuser, &r.head) && !newer_than(&e, r.cursor, &r.head));
  case fork_phase::ready:
  case fork_phase::ahead: return true;
  case fork_phase::after: return newer_than(&e, r.cursor, &r.head);
  case fork_phase::idle:
  case fork_phase::blocking:
  case fork_phase::backoff: return false;
  }
  return false;
}

inline void remove_in_fork(registry_state& r, registry_entry& e) noexcept {
  if (&e == r.cursor || &e == r.blocked_on) {
    e.flags |= entry_self_removed; // the loop running its handler finishes the removal
    return;
  }
  if (owed_a_call(r, e)) {
    const bool child = r.phase == fork_phase::after && r.after_child;
    const std::uint32_t cap = child ? entry_has_child : entry_has_parent;
    if (has(e, cap)) call_entry(e, child ? entry_op::child : entry_op::parent);
  }
  if (&e == r.held) r.held = nullptr;
  unlink_entry(r, e);
  call_entry(e, entry_op::destroy);
}

// After the call on r.cursor returned: if it removed itself, undo what the
// call did when that was a successful prepare, unlink and destroy it.
// Returns the entry to continue from (`toward_newest`: the iteration's
// direction), or the cursor itself when it is still linked.
inline registry_entry* settle_cursor(registry_state& r, registry_entry* e, bool prepared, bool toward_newest) noexcept {
  registry_entry* const next = toward_newest ? e->next : e->prev;
  if ((e->flags & entry_self_removed) == 0) return next;
  if (prepared && has(*e, entry_has_parent)) call_entry(*e, entry_op::parent);
  if (e == r.held) r.held = nullptr;
  unlink_entry(r, *e);
  call_entry(*e, entry_op::destroy);
  return next;
}

// ---- preparing ------------------------------------------------------------

// Undoes a refused pass: parent handlers of what it prepared, newest first
// (folly's order): every entry newer than the refuser, and `held`.
inline void undo_pass(registry_state& r) noexcept {
  r.phase = fork_phase::undo;
  bool past_refuser = false;
  for (registry_entry* e = r.head.prev; e != &r.head;) {
    if (e == r.refuser) {
      past_refuser = true;
      if (r.held == nullptr) break;
      e = e->prev;
      continue;
    }
    if (!takes_part(*e) || (past_refuser && e != r.held)) {
      e = e->prev;
      continue;
    }
    r.cursor = e;
    if (e == r.held) r.held = nullptr; // undone from here on
    if (has(*e, entry_has_parent)) call_entry(*e, entry_op::parent);
    e = settle_cursor(r, e, false, false);
    if (past_refuser && r.held == nullptr) break;
  }
  r.held = nullptr;
  r.cursor = nullptr;
}

inline void note_left_out(registry_state& r, const registry_entry& e) noexcept {
  if (r.stats.unprepared_count < fork_stats::max_blockers) {
    std::snprintf(r.stats.unprepared[r.stats.unprepared_count++], sizeof r.stats.unprepared[0], "%s", entry_name(e));
  }
}

// One pass, newest first. Returns the refuser (after undoing), or nullptr
// when every entry is prepared. `give_up`: the timeout passed; an entry that
// can prepare partly does so and takes part, one that refuses is left out
// of this fork (entry_unprepared).
inline registry_entry* prepare_pass(registry_state& r, bool give_up) noexcept {
  ++r.stats.passes;
  r.phase = fork_phase::pass;
  for (registry_entry* e = r.head.prev; e != &r.head;) {
    prefetch_entry(e->prev);
    if ((e->flags & entry_added_in_fork) != 0 || e == r.held || !has(*e, entry_can_try)) {
      e = e->prev;
      continue;
    }
    r.cursor = e;
    bool ok;
    if (give_up && has(*e, entry_can_partial)) {
      if (!call_entry(*e, entry_op::prepare_partial)) note_left_out(r, *e);
      ok = true;
    } else {
      ok = call_try_prepare(*e);
    }
    if (!ok && (e->flags & entry_self_removed) == 0) {
      if (give_up) {
        e->flags |= entry_unprepared;
        r.changed_in_fork = true;
        note_left_out(r, *e);
        e = e->prev;
        continue;
      }
      r.refuser = e;
      undo_pass(r);
      registry_entry* refuser = r.refuser;
      r.refuser = nullptr;
      return refuser;
    }
    e = settle_cursor(r, e, ok, false);
  }
  r.cursor = nullptr;
  return nullptr;
}

// Sleeps after a refusal by an entry that cannot wait: yield 8 times, then
// 1 µs doubling to 1 ms, never past the deadline.
inline void back_off(unsigned attempt, std::int64_t deadline_ns) noexcept {
  if (attempt < 8) {
    ::sched_yield();
    return;
  }
  const unsigned shift = attempt - 8 < 10 ? attempt - 8 : 10;
  std::int64_t nap = std::int64_t{1000} << shift;
  nap = std::min(nap, deadline_ns - steady_ns());
  if (nap <= 0) return;
  const timespec ts{0, static_cast<long>(nap)};
  ::nanosleep(&ts, nullptr);
}

// Called by the forking thread holding fork_lock and list_lock. Returns true
// with every entry prepared (list_lock held), or false when the deadline
// passed and `may_fail` (nothing prepared; list_lock held). Without
// `may_fail` it never fails: past the deadline, a last pass leaves out what
// refuses.
inline bool prepare_all(registry_state& r, std::int64_t deadline_ns, bool may_fail) noexcept {
  const std::uint32_t me = this_thread_id();
  unsigned attempt = 0;
  for (;;) {
    registry_entry* const refuser = prepare_pass(r, false);
    if (refuser == nullptr) break;
    note_refusal(r, *refuser);
    const std::int64_t t0 = steady_ns();
    if (t0 >= deadline_ns) {
      if (may_fail) {
        r.stats.gave_up = true;
        r.phase = fork_phase::idle;
        return false;
      }
      r.stats.gave_up = true;
      (void)prepare_pass(r, true);
      break;
    }
    if (has(*refuser, entry_can_wait)) {
      // std::lock's step: block on the refuser holding nothing else.
      r.phase = fork_phase::blocking;
      r.blocked_on = refuser;
      r.list_lock.unlock();
      const bool ok = call_entry(*refuser, entry_op::prepare_until, deadline_ns);
      r.list_lock.lock(me);
      r.blocked_on = nullptr;
      r.blocked_seq.fetch_add(1, std::memory_order_release);
      futex_wake(r.blocked_seq, INT_MAX);
      add_held_back(r, *refuser, steady_ns() - t0);
      if ((refuser->flags & entry_self_removed) != 0) {
        (void)settle_cursor(r, refuser, ok, false);
      } else if (ok) {
        r.held = refuser;
      }
    } else {
      r.phase = fork_phase::backoff;
      r.list_lock.unlock();
      back_off(attempt++, deadline_ns);
      r.list_lock.lock(me);
      add_held_back(r, *refuser, steady_ns() - t0);
    }
  }
  r.phase = fork_phase::ready;
  r.cursor = nullptr;
  r.held = nullptr; // prepared like the rest now; the next fork starts afresh
  return true;
}

// ---- after fork -----------------------------------------------------------

// Parent or child handlers, oldest first; then forgets what this fork marked.
inline void run_after_fork(registry_state& r, bool child) noexcept {
  r.phase = fork_phase::after;
  r.after_child = child;
  for (registry_entry* e = r.head.next; e != &r.head;) {
    prefetch_entry(e->next); // in a child every entry is a cache miss: overlap the next one's with this call
    const bool part = takes_part(*e);
    const bool unprepared = (e->flags & entry_unprepared) != 0;
    r.cursor = e;
    if (part && has(*e, child ? entry_has_child : entry_has_parent)) {
      call_after_fork(*e, child);
    } else if (unprepared && child && has(*e, entry_has_unprepared)) {
      call_entry(*e, entry_op::child_unprepared);
    }
    e = settle_cursor(r, e, false, true);
  }
  r.cursor = nullptr;
  if (r.changed_in_fork) {
    for (registry_entry* e = r.head.next; e != &r.head; e = e->next) {
      e->flags &= ~(entry_added_in_fork | entry_unprepared);
    }
    r.changed_in_fork = false;
  }
  r.phase = fork_phase::idle;
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_REGISTRY_CORE_HPP
