// SPDX-License-Identifier: MIT
//
// forksafe/detail/quiesce_domain.hpp: how quiesce-policy locks are taken
// before fork() and given back after it.
//
// Every live quiesce lock is a node in one intrusive list. The domain is one
// entry of the fork registry ("forksafe quiesce locks"). Its try-prepare
// closes the gate and try-locks every node the forking thread does not
// already hold; its blocking prepare does it with std::lock's algorithm:
// give back everything, block on the node that was busy, keep it, try the
// rest. The fork never waits on a lock while holding another, so it cannot
// deadlock against a thread that holds A and wants B.
//
// Locks are taken for the fork under a *fork tag*, an owner id naming the
// fork's epoch. When the fork ends, in the parent and in the child, the epoch
// advances and every tag of the old epoch means "free": the next lock()
// takes it over. So nothing writes the locks after fork(), when every page is
// copy-on-write (10,000 locks: ~80 pages, twice). A thread that meets a lock
// tagged for the fork in progress waits on the gate word.
//
// The gate: while it is closed, a thread that holds no quiesce lock waits
// before taking one (holders pass, so they can finish), and one woken inside
// lock() steps back for the fork; without that, a holder that unlocks and
// relocks at once, or a queue of threads taking turns, would leave the fork
// no moment when every lock is free. It waits for progress, not for a fixed
// time: a held-back thread is let through (the gate "admits") only when the
// fork has waited no_progress_limit without any lock it waits for being
// released, which is what a cycle through a lock forksafe cannot see looks
// like (a holder of quiesce A waiting for a plain mutex held by a thread
// that waits at the gate). Holders waiting on a lock tagged for the fork are
// woken each time a pass gives its tags back (the epoch moves on).
//
// If the prepare timeout passes, the registry asks for a partial prepare:
// the free locks are taken, the busy ones are marked, and in the child a
// marked lock is poisoned (its lock() throws fork_poisoned), since its
// holder vanished mid-update.

#ifndef FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP
#define FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP

#include "config.hpp"
#include "futex.hpp"
#include "intrusive_ring.hpp"
#include "owner_lock.hpp"
#include "process_hub.hpp"
#include "registry.hpp"
#include "registry_core.hpp"
#include "registry_entry.hpp"

#include <atomic>  // the gate
#include <chrono>  // no_progress_limit
#include <climits> // INT_MAX
#include <cstdint> // std::uint32_t
#include <cstdio>  // std::snprintf: describe
#include <new>     // std::nothrow

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Operations the domain performs on a node, dispatched through one function
/// pointer so a node costs 24 bytes whatever the lock type.
enum class quiesce_op {
  try_take,  ///< take under the current fork tag unless this thread holds it: 1, or 0 if busy;
             ///< arg 1: the fork waited on it (wait_free), so keep the waiters bit
  give_back, ///< undo try_take
  wait_free, ///< block until it looks free, at most until `arg` (steady ns)
  holder,    ///< the owner's id; a shared lock without a writer: minus its reader count
  mark_busy, ///< a timed-out fork goes on without it
  fix_child, ///< in the child: repair what tags cannot express; poison if marked
  fix_parent ///< in the parent after a fork that marked it: forget the mark
};

struct quiesce_node {
  quiesce_node* prev = nullptr;
  quiesce_node* next = nullptr;
  std::int64_t (*ops)(quiesce_node&, quiesce_op, std::int64_t arg) noexcept = nullptr;
};

/// Gate word bits (process_hub::quiesce_gate).
inline constexpr std::uint32_t gate_closed = 1;
inline constexpr std::uint32_t gate_admitting = 2;
inline constexpr std::uint32_t gate_epoch_step = 4;

/// Owner ids from here up are fork tags (thread ids stay below 2^30).
inline constexpr std::uint32_t fork_tag_base = 1U << 30;

/// How long the fork may wait on a lock without any being released before
/// held-back threads are let through.
inline constexpr std::chrono::milliseconds no_progress_limit{100};

/// The fork tag of the epoch in gate word `gate`.
inline std::uint32_t fork_tag(std::uint32_t gate) noexcept {
  return fork_tag_base | ((gate >> 2) & (fork_tag_base - 1));
}
inline bool is_fork_tag(std::uint32_t owner) noexcept { return owner >= fork_tag_base; }

/// Whether fork tag `owner` belongs to the fork being prepared or run now.
/// Tags are only written while the gate is closed, so with the gate open
/// every tag is stale, even one whose 30-bit epoch has come round again.
inline bool current_fork_tag(std::uint32_t owner, std::uint32_t gate) noexcept {
  return (gate & gate_closed) != 0 && owner == fork_tag(gate);
}

inline std::atomic<std::uint32_t>& gate_word() noexcept { return hub().quiesce_gate; }

/// Waits (nullptr: until it changes) while the gate word is `seen`.
inline void wait_on_gate(std::uint32_t seen, const timespec* timeout = nullptr) noexcept {
  process_hub& h = hub();
  h.quiesce_gate_waiters.fetch_add(1, std::memory_order_seq_cst);
  futex_wait(h.quiesce_gate, seen, timeout);
  h.quiesce_gate_waiters.fetch_sub(1, std::memory_order_relaxed);
}

inline void wake_gate() noexcept {
  process_hub& h = hub();
  if (h.quiesce_gate_waiters.load(std::memory_order_seq_cst) != 0) futex_wake(h.quiesce_gate, INT_MAX);
}

/// Whether a thread that wants a quiesce lock must wait for the fork first:
/// the gate is closed and not admitting, it holds none, and it is not the
/// forking thread itself.
inline bool held_back(std::uint32_t gate) noexcept {
  if ((gate & (gate_closed | gate_admitting)) != gate_closed) return false;
  const thread_record& me = this_thread();
  return me.quiesce_depth == 0 && hub().quiesce_forker.load(std::memory_order_relaxed) != me.id;
}

FORKSAFE_NOINLINE inline void wait_at_gate() noexcept {
  for (;;) {
    const std::uint32_t gate = gate_word().load(std::memory_order_acquire);
    if (!held_back(gate)) return;
    wait_on_gate(gate);
  }
}

/// Called before a quiesce lock is taken: waits while a fork is being
/// prepared, unless this thread already holds a quiesce lock.
inline void pass_gate() noexcept {
  if (FORKSAFE_UNLIKELY((gate_word().load(std::memory_order_relaxed) & gate_closed) != 0)) wait_at_gate();
}

/// What a quiesce lock does when it finds a lock taken: a tag of an ended
/// fork is free (take it over); a tag of the fork in progress means wait for
/// the fork to end; a poisoned lock throws (fork_safe_mutex.hpp supplies the
/// exception through `Poisoned`); a thread's id means wait on the lock. A
/// thread woken to a free lock while the fork holds threads back steps back.
template <class Poisoned>
struct quiesce_hook {
  contended_action operator()(std::uint32_t owner) const {
    if (FORKSAFE_UNLIKELY(owner == poisoned_owner)) throw Poisoned();
    if (FORKSAFE_LIKELY(!is_fork_tag(owner))) return contended_action::wait;
    const std::uint32_t gate = gate_word().load(std::memory_order_acquire);
    if (!current_fork_tag(owner, gate)) return contended_action::take_over;
    wait_on_gate(gate);
    return contended_action::retry;
  }
  [[nodiscard]] bool defer() const noexcept { return held_back(gate_word().load(std::memory_order_acquire)); }
  void wait_deferred() const noexcept { wait_at_gate(); }
};

/// True if `owner` is a fork tag whose fork has ended (the lock is free).
inline bool stale_fork_tag(std::uint32_t owner) noexcept {
  return is_fork_tag(owner) && !current_fork_tag(owner, gate_word().load(std::memory_order_acquire));
}

/// The tag locks are taken under in the fork being prepared.
[[nodiscard]] inline std::uint32_t current_tag() noexcept {
  return fork_tag(gate_word().load(std::memory_order_relaxed));
}

struct quiesce_state {
  owner_lock list_lock;
  bool child_fixes = false;  ///< a node asked for fix_child in this fork
  bool parent_fixes = false; ///< a node was marked busy: fix_parent too
  quiesce_node head;
  quiesce_node* blocked = nullptr;           ///< pinned while the fork blocks on it (under list_lock)
  std::atomic<std::uint32_t> blocked_seq{0}; ///< changes when `blocked` is cleared (a futex)
  quiesce_node* held = nullptr;              ///< taken by blocking, kept into the next sweep
  const quiesce_node* last_busy = nullptr;   ///< for describe
  std::int64_t last_busy_holder = 0;         ///< its holder op's answer
  registry_entry entry;
};

inline quiesce_state& quiesce() noexcept;

/// try_take; `waited`: after wait_free on it (the waiters bit is kept, see owner_lock::try_lock).
inline bool take(quiesce_node& n, bool waited = false) noexcept {
  return n.ops(n, quiesce_op::try_take, waited ? 1 : 0) != 0;
}

// Gives back every node taken in this sweep: from `upto` (exclusive, or the
// sentinel for all) back to the first, and `held`.
inline void give_back(quiesce_state& q, quiesce_node* upto) noexcept {
  for (quiesce_node* p = (upto == &q.head ? q.head.prev : upto->prev); p != &q.head; p = p->prev) {
    if (p != q.held) p->ops(*p, quiesce_op::give_back, 0);
  }
  if (q.held != nullptr) q.held->ops(*q.held, quiesce_op::give_back, 0);
  q.held = nullptr;
}

// Under list_lock: takes every node (but `held`, taken already). Returns the
// first busy node, having given back what it took, or nullptr.
inline quiesce_node* sweep(quiesce_state& q) noexcept {
  q.child_fixes = false;
  q.parent_fixes = false;
  for (quiesce_node* n = q.head.next; n != &q.head; n = n->next) {
    if (n == q.held || take(*n)) continue;
    q.last_busy = n;
    q.last_busy_holder = n->ops(*n, quiesce_op::holder, 0);
    give_back(q, n); // and clears held
    return n;
  }
  q.held = nullptr; // all taken: a later fork's sweep must take it again
  return nullptr;
}

inline void close_gate(process_hub& h) noexcept {
  h.quiesce_forker.store(this_thread_id(), std::memory_order_relaxed);
  h.quiesce_gate.fetch_or(gate_closed, std::memory_order_seq_cst);
}

// Gives the tags of this pass back: a new epoch, the gate still closed (and
// no longer admitting), waking whoever met one of them (it may hold the
// lock that made the pass fail).
inline void abandon_epoch(process_hub& h) noexcept {
  std::uint32_t g = h.quiesce_gate.load(std::memory_order_relaxed);
  while (!h.quiesce_gate.compare_exchange_weak(g, ((g & ~gate_admitting) + gate_epoch_step) | gate_closed,
                                               std::memory_order_seq_cst)) {
  }
  wake_gate();
}

// Opens the gate into a new epoch: every lock tagged for this fork is free.
inline void open_gate(process_hub& h) noexcept {
  std::uint32_t g = h.quiesce_gate.load(std::memory_order_relaxed);
  while (!h.quiesce_gate.compare_exchange_weak(g, (g & ~(gate_closed | gate_admitting)) + gate_epoch_step,
                                               std::memory_order_seq_cst)) {
  }
  h.quiesce_forker.store(0, std::memory_order_relaxed);
  wake_gate();
}

inline void set_admitting(process_hub& h, bool on) noexcept {
  const std::uint32_t g = h.quiesce_gate.load(std::memory_order_relaxed);
  if (((g & gate_admitting) != 0) == on) return;
  if (on) {
    h.quiesce_gate.fetch_or(gate_admitting, std::memory_order_seq_cst);
    wake_gate();
  } else {
    h.quiesce_gate.fetch_and(~gate_admitting, std::memory_order_seq_cst);
  }
}

inline bool quiesce_try_prepare(quiesce_state& q) noexcept {
  process_hub& h = hub();
  close_gate(h);
  q.list_lock.lock(this_thread_id()); // held until the fork ends: no lock comes or goes meanwhile
  q.held = nullptr;
  if (sweep(q) == nullptr) return true;
  q.list_lock.unlock();
  open_gate(h);
  return false;
}

// Blocks on `n` (pinned) until this fork takes it or `deadline_ns` passes.
inline bool take_blocking(quiesce_node& n, std::int64_t deadline_ns) noexcept {
  process_hub& h = hub();
  const std::int64_t limit = std::chrono::nanoseconds(no_progress_limit).count();
  std::int64_t last_progress = steady_ns();
  std::int64_t seen_owner = n.ops(n, quiesce_op::holder, 0);
  for (bool waited = false;; waited = true) {
    if (take(n, waited)) {
      set_admitting(h, false);
      return true;
    }
    const std::int64_t now = steady_ns();
    if (now >= deadline_ns) return false;
    const std::int64_t owner = n.ops(n, quiesce_op::holder, 0);
    if (owner != seen_owner) { // released and taken again: the threads make progress
      seen_owner = owner;
      last_progress = now;
      set_admitting(h, false);
    } else if (now - last_progress >= limit) {
      set_admitting(h, true); // nothing moves: perhaps a cycle through a lock forksafe cannot see
    }
    const std::int64_t slice_end = now - last_progress >= limit ? deadline_ns : last_progress + limit;
    n.ops(n, quiesce_op::wait_free, deadline_ns < slice_end ? deadline_ns : slice_end);
  }
}

inline void unpin(quiesce_state& q, std::uint32_t me) noexcept {
  q.list_lock.lock(me);
  q.blocked = nullptr;
  q.blocked_seq.fetch_add(1, std::memory_order_release);
  futex_wake(q.blocked_seq, INT_MAX);
}

inline bool quiesce_prepare_until(quiesce_state& q, std::int64_t deadline_ns) noexcept {
  process_hub& h = hub();
  const std::uint32_t me = this_thread_id();
  close_gate(h);
  q.held = nullptr;
  q.list_lock.lock(me);
  for (;;) {
    quiesce_node* const busy = sweep(q);
    if (busy == nullptr) return true; // list_lock held until the fork ends
    abandon_epoch(h);
    q.blocked = busy;
    q.list_lock.unlock();
    const bool taken = take_blocking(*busy, deadline_ns);
    unpin(q, me); // relocks the list
    if (!taken) {
      q.list_lock.unlock();
      set_admitting(h, false);
      open_gate(h);
      return false;
    }
    q.held = busy; // skipped by the next sweep (and only by it: sweep clears it when done)
  }
}

// The registry timed out: take what is free, mark what is busy (poisoned in
// the child). Never blocks but on the list lock. True if all were taken.
inline bool quiesce_prepare_partial(quiesce_state& q) noexcept {
  close_gate(hub());
  q.list_lock.lock(this_thread_id());
  q.held = nullptr;
  q.child_fixes = false;
  q.parent_fixes = false;
  bool all = true;
  for (quiesce_node* n = q.head.next; n != &q.head; n = n->next) {
    if (take(*n)) continue;
    n->ops(*n, quiesce_op::mark_busy, 0);
    q.child_fixes = q.parent_fixes = true;
    all = false;
  }
  return all;
}

/// Called by a node's try_take on the forking thread: the child must visit
/// it after the fork (fix_child).
inline void needs_fix_in_child() noexcept { quiesce().child_fixes = true; }

inline void quiesce_end_fork(quiesce_state& q, bool in_child) noexcept {
  process_hub& h = hub();
  if (in_child ? q.child_fixes : q.parent_fixes) {
    const quiesce_op op = in_child ? quiesce_op::fix_child : quiesce_op::fix_parent;
    for (quiesce_node* n = q.head.next; n != &q.head; n = n->next) n->ops(*n, op, 0);
  }
  q.child_fixes = q.parent_fixes = false;
  if (in_child) {
    q.list_lock.reset_in_child();
    q.blocked_seq.store(0, std::memory_order_relaxed);
    const std::uint32_t g = h.quiesce_gate.load(std::memory_order_relaxed);
    h.quiesce_gate.store((g & ~(gate_closed | gate_admitting)) + gate_epoch_step, std::memory_order_relaxed);
    h.quiesce_gate_waiters.store(0, std::memory_order_relaxed); // its waiters did not survive
    h.quiesce_forker.store(0, std::memory_order_relaxed);
    return;
  }
  q.list_lock.unlock();
  open_gate(h);
}

inline bool quiesce_entry_run(registry_entry&, entry_op op, const entry_args& a) noexcept {
  quiesce_state& q = quiesce();
  switch (op) {
  case entry_op::try_prepare: return quiesce_try_prepare(q);
  case entry_op::prepare_until: return quiesce_prepare_until(q, a.deadline_ns);
  case entry_op::prepare_partial: return quiesce_prepare_partial(q);
  case entry_op::parent: quiesce_end_fork(q, false); return true;
  case entry_op::child: quiesce_end_fork(q, true); return true;
  case entry_op::child_unprepared: return true; // never left out: it prepares partly instead
  case entry_op::describe:
    if (a.text != nullptr && q.last_busy != nullptr) {
      const std::int64_t who = q.last_busy_holder;
      if (who > 0 && who < std::int64_t{fork_tag_base}) {
        std::snprintf(a.text, a.text_capacity, "the quiesce lock at %p, held by forksafe thread %lld",
                      static_cast<const void*>(q.last_busy), static_cast<long long>(who));
      } else if (who < 0) {
        std::snprintf(a.text, a.text_capacity, "the quiesce shared lock at %p, held by %lld reader(s)",
                      static_cast<const void*>(q.last_busy), static_cast<long long>(-who));
      } else {
        std::snprintf(a.text, a.text_capacity, "the quiesce lock at %p", static_cast<const void*>(q.last_busy));
      }
    }
    return true;
  case entry_op::destroy: return true; // lives as long as the process
  }
  return true;
}

inline const char* quiesce_entry_name(const registry_entry&) noexcept { return "forksafe quiesce locks"; }
FORKSAFE_HIDDEN inline constexpr entry_type quiesce_entry_kind{&quiesce_entry_run, nullptr, nullptr,
                                                               &quiesce_entry_name};

FORKSAFE_NOINLINE inline quiesce_state& make_quiesce(process_hub& h) noexcept {
  registry_state& r = registry(); // made first: its entry is older than any the program adds later
  (void)r;
  h.init_lock.lock(1);
  quiesce_state* q = h.quiesce.load(std::memory_order_acquire);
  const bool made = q == nullptr;
  if (made) {
    q = new (std::nothrow) quiesce_state();
    if (q == nullptr) {
      std::fputs("forksafe: cannot allocate the quiesce lock list; calling std::terminate\n", stderr);
      std::terminate();
    }
    ring_init(q->head);
    q->entry.type = &quiesce_entry_kind;
    q->entry.caps =
        entry_can_try | entry_can_wait | entry_can_partial | entry_has_parent | entry_has_child | entry_can_describe;
    pin_object_of(reinterpret_cast<const void*>(&quiesce_entry_run));
    h.quiesce.store(q, std::memory_order_release);
  }
  h.init_lock.unlock();
  // Never removed; the oldest entry, whenever made: its prepare runs last in
  // a pass and its parent and child first, so the gate is open before any
  // other entry's after-fork handler runs.
  if (made) registry_add(q->entry, true);
  return *q;
}

/// The process's quiesce list; made, with its registry entry, on first use.
inline quiesce_state& quiesce() noexcept {
  process_hub& h = hub();
  quiesce_state* q = h.quiesce.load(std::memory_order_acquire);
  return FORKSAFE_LIKELY(q != nullptr) ? *q : make_quiesce(h);
}

// Locks the list unless this thread already holds it (it is the forking
// thread, constructing or destroying a lock inside a fork handler).
inline bool lock_quiesce_list(quiesce_state& q) noexcept {
  const std::uint32_t me = this_thread_id();
  if (q.list_lock.owner() == me) return false;
  q.list_lock.lock(me);
  return true;
}

inline void link_quiesce(quiesce_node& n) noexcept {
  quiesce_state& q = quiesce();
  const bool mine = lock_quiesce_list(q);
  ring_push_back(q.head, n);
  if (mine) q.list_lock.unlock();
}

inline void unlink_quiesce(quiesce_node& n) noexcept {
  quiesce_state& q = quiesce();
  const std::uint32_t me = this_thread_id();
  const bool mine = lock_quiesce_list(q);
  while (q.blocked == &n) { // a fork blocks on it: it is unlocked by now (a precondition), so that ends soon
    const std::uint32_t seen = q.blocked_seq.load(std::memory_order_acquire);
    q.list_lock.unlock();
    futex_wait(q.blocked_seq, seen);
    q.list_lock.lock(me);
  }
  ring_unlink(n);
  if (mine) q.list_lock.unlock();
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP
