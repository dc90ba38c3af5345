// SPDX-License-Identifier: MIT
//
// forksafe/detail/registry.hpp: the process's fork handler registry: made on
// first use with its pthread_atfork triple, the triple itself, preparing a
// fork ahead of fork() for forksafe's own forks, and adding and removing
// entries. The algorithm is in detail/registry_core.hpp.

#ifndef FORKSAFE_DETAIL_REGISTRY_HPP
#define FORKSAFE_DETAIL_REGISTRY_HPP

#include "config.hpp"
#include "deadlines.hpp"
#include "futex.hpp"
#include "intrusive_ring.hpp"
#include "process_hub.hpp"
#include "registry_core.hpp"
#include "registry_entry.hpp"
#include "registry_report.hpp"

#include <algorithm> // std::min
#include <cerrno>    // errno is kept around the handlers
#include <climits>   // INT_MAX
#include <cstdint>   // nanosecond counts
#include <cstdio>    // std::fprintf, std::fputs
#include <cstdlib>   // std::getenv, std::strtoll: settings from the environment
#include <exception> // std::terminate
#include <new>       // std::nothrow

#include <pthread.h> // pthread_atfork

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

// ---- the pthread_atfork triple ---------------------------------------------

inline registry_state& registry() noexcept;

inline void begin_fork(registry_state& r, std::uint32_t me, bool ahead) noexcept {
  r.fork_lock.lock(me);
  r.list_lock.lock(me);
  // Only the counters: the name arrays are read up to the counts, and
  // writing all of them would touch pages the last fork made copy-on-write.
  r.held = r.cursor = r.refuser = nullptr;
  fork_stats& s = r.stats;
  s.started_ns = steady_ns();
  s.waited_ns = 0;
  s.passes = s.blocker_count = s.unprepared_count = 0;
  s.gave_up = false;
  s.ahead = ahead;
}

inline std::int64_t deadline_from(const registry_state& r, std::int64_t start_ns) noexcept {
  const std::int64_t t = r.prepare_timeout_ns.load(std::memory_order_relaxed);
  return t >= INT64_MAX - start_ns ? INT64_MAX : start_ns + t;
}

inline void on_prepare() noexcept {
  const int saved = errno;
  registry_state& r = registry();
  thread_record& self = this_thread();
  if (r.fork_lock.owner() == self.id) {
    if (r.phase == fork_phase::ahead) {
      r.phase = fork_phase::ready; // prepare_ahead did it for this fork()
    } else {
      ++self.nested_forks; // a signal handler forks inside a fork: no handlers, as _Fork()
    }
    errno = saved;
    return;
  }
  begin_fork(r, self.id, false);
  (void)prepare_all(r, deadline_from(r, r.stats.started_ns), false);
  r.stats.waited_ns = steady_ns() - r.stats.started_ns;
  errno = saved;
}

inline void end_fork_in_parent(registry_state& r) noexcept {
  run_after_fork(r, false);
  r.list_lock.unlock();
  report_fork(r);
  r.fork_lock.unlock();
}

inline void on_parent() noexcept {
  const int saved = errno; // fork's own errno when fork() failed
  thread_record& self = this_thread();
  if (self.nested_forks != 0) {
    --self.nested_forks;
  } else {
    end_fork_in_parent(registry());
  }
  errno = saved;
}

inline void on_child() noexcept {
  const int saved = errno;
  process_hub& h = hub();
  h.fork_generation.fetch_add(1, std::memory_order_relaxed);
  record_fork_survivor();
  thread_record& self = this_thread();
  if (self.nested_forks != 0) {
    --self.nested_forks;
  } else {
    registry_state& r = registry();
    run_after_fork(r, true);
    r.list_lock.reset_in_child(); // threads that waited on them are gone
    r.fork_lock.reset_in_child();
    r.blocked_seq.store(0, std::memory_order_relaxed);
  }
  errno = saved;
}

// ---- preparing ahead: forksafe's own forks --------------------------------

/// Prepares a fork the calling thread will make with fork() right after, by
/// `deadline_ns` at the latest. Requires: every signal blocked on this
/// thread (so no handler can fork in between). True: call fork() now (its
/// handlers consume the preparation), or cancel_ahead(). False: nothing is
/// prepared, nothing held; `stats` says what held the fork back.
inline bool prepare_ahead(std::int64_t deadline_ns, fork_stats& stats) noexcept {
  registry_state& r = registry();
  const std::uint32_t me = this_thread_id();
  if (r.fork_lock.owner() == me) { // inside a fork handler: fork() would run no handlers anyway
    stats = fork_stats{};
    return true;
  }
  begin_fork(r, me, true);
  const std::int64_t own = deadline_from(r, r.stats.started_ns);
  const bool ok = prepare_all(r, std::min(own, deadline_ns), true);
  r.stats.waited_ns = steady_ns() - r.stats.started_ns;
  stats = r.stats;
  if (ok) {
    r.phase = fork_phase::ahead;
    return true;
  }
  r.phase = fork_phase::idle;
  r.list_lock.unlock();
  report_fork(r);
  r.fork_lock.unlock();
  return false;
}

/// Undoes a successful prepare_ahead whose fork() was not called.
inline void cancel_ahead() noexcept {
  registry_state& r = registry();
  if (r.phase != fork_phase::ahead || r.fork_lock.owner() != this_thread_id()) return;
  end_fork_in_parent(r);
}

// ---- the registry itself --------------------------------------------------

/// Reads a non-negative millisecond count from the environment; -1 when
/// unset; garbage is ignored with one line on stderr.
inline std::int64_t env_milliseconds(const char* name) noexcept {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return -1;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 365LL * 24 * 3600 * 1000) {
    std::fprintf(stderr, "forksafe: ignoring %s=\"%.40s\": expected a number of milliseconds\n", name, s);
    return -1;
  }
  return v;
}

FORKSAFE_NOINLINE inline registry_state& make_registry(process_hub& h) noexcept {
  (void)this_thread(); // its record exists before any fork handler needs it
  h.init_lock.lock(1);
  registry_state* r = h.registry.load(std::memory_order_acquire);
  if (r == nullptr) {
    r = new (std::nothrow) registry_state();
    if (r == nullptr) {
      std::fputs("forksafe: cannot allocate the fork handler registry; calling std::terminate\n", stderr);
      std::terminate();
    }
    ring_init(r->head);
    const int saved = errno;
    if (const std::int64_t ms = env_milliseconds("FORKSAFE_PREPARE_TIMEOUT_MS"); ms >= 0) {
      r->prepare_timeout_ns.store(ms * 1'000'000, std::memory_order_relaxed);
    }
    if (const std::int64_t ms = env_milliseconds("FORKSAFE_SLOW_FORK_MS"); ms >= 0) {
      r->stderr_threshold_ns.store(ms * 1'000'000, std::memory_order_relaxed);
    }
    errno = saved;
    ::pthread_atfork(&on_prepare, &on_parent, &on_child);
    pin_object_of(reinterpret_cast<const void*>(&on_prepare));
    h.registry.store(r, std::memory_order_release);
  }
  h.init_lock.unlock();
  return *r;
}

/// The process's registry; made, with its pthread_atfork triple, on first use.
inline registry_state& registry() noexcept {
  process_hub& h = hub();
  registry_state* r = h.registry.load(std::memory_order_acquire);
  return FORKSAFE_LIKELY(r != nullptr) ? *r : make_registry(h);
}

/// Adds an entry, as the newest (or the oldest). From inside a handler on
/// the forking thread it takes part from the next fork on; otherwise it may
/// wait for a fork in progress (not while that fork blocks on an entry or
/// backs off).
inline void registry_add(registry_entry& e, bool oldest = false) noexcept {
  registry_state& r = registry();
  const std::uint32_t me = this_thread_id();
  if (r.list_lock.owner() == me) {
    e.flags |= entry_added_in_fork;
    r.changed_in_fork = true;
    link_entry(r, e, oldest);
    return;
  }
  r.list_lock.lock(me);
  link_entry(r, e, oldest);
  r.list_lock.unlock();
}

/// Removes and destroys an entry; when it returns its handlers no longer run
/// (see the file comment for removal from inside a handler).
inline void registry_remove(registry_entry& e) noexcept {
  registry_state& r = registry();
  const std::uint32_t me = this_thread_id();
  if (r.list_lock.owner() == me) {
    remove_in_fork(r, e);
    return;
  }
  if (r.fork_lock.owner() == me && r.phase == fork_phase::blocking && r.blocked_on == &e) {
    e.flags |= entry_self_removed; // from inside its own prepare_until: finished when it returns
    return;
  }
  r.list_lock.lock(me);
  while (r.blocked_on == &e) { // a fork is blocked inside this entry: wait for it to come out
    const std::uint32_t seen = r.blocked_seq.load(std::memory_order_acquire);
    r.list_lock.unlock();
    futex_wait(r.blocked_seq, seen);
    r.list_lock.lock(me);
  }
  // Outside blocking and backing off, a fork holds the list lock: an entry
  // seen here is prepared for no fork.
  unlink_entry(r, e);
  r.list_lock.unlock();
  call_entry(e, entry_op::destroy);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_REGISTRY_HPP
