// SPDX-License-Identifier: MIT
//
// forksafe/detail/quiesce_domain.hpp: how quiesce-policy locks are taken
// before fork() and given back after it.
//
// Every live quiesce lock is a node in one intrusive list (linking costs no
// allocation and O(1)). The domain is one atfork_registry entry: its prepare
// try-locks every node the forking thread does not already hold and, if one
// is busy, gives back what it took and says "not now", so the registry backs
// off and retries; the fork never waits on a lock while holding another, so
// it cannot deadlock against a thread that holds A and wants B.
//
// Locks are taken for the fork under a *fork tag*, an owner id that names
// the fork's epoch. When the fork ends, in the parent and in the child, the
// epoch advances and every tag of the old epoch means "free": the next lock()
// takes it over. So nothing writes to the locks after fork(), when every page
// is write-protected and each write would cost a page fault in both
// processes (10,000 locks: ~80 pages, twice). A thread that meets a lock
// tagged for the fork in progress waits on the gate word, which the end of
// the fork changes and wakes.
//
// A try-lock alone can starve: a thread that unlocks and at once relocks
// leaves the forker a window of nanoseconds. So the prepare also closes the
// gate: while it is closed, a thread that holds no quiesce lock waits before
// taking one (holders of one may take more, so they can finish and release).
// That wait is bounded (max_gate_wait), so a thread that also holds a lock of
// another kind, which a quiesce holder may need, cannot deadlock with it.

#ifndef FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP
#define FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP

#include "../atfork_registry.hpp"
#include "config.hpp"
#include "futex.hpp"
#include "owner_lock.hpp"
#include "thread_identity.hpp"

#include <atomic>  // the gate
#include <chrono>  // bounded gate wait
#include <climits> // INT_MAX
#include <cstdint> // std::uint32_t

namespace forksafe::detail {

/// Operations the domain performs on a node, dispatched through one function
/// pointer so a node costs 24 bytes whatever the lock type.
enum class quiesce_op {
  try_take,  ///< take the lock under the fork tag unless this thread holds it; false if busy
  give_back, ///< a later node was busy: undo try_take now
  fix_child, ///< in the child, for nodes that asked for it: repair what tags cannot express
};

struct quiesce_node {
  quiesce_node* prev = nullptr;
  quiesce_node* next = nullptr;
  bool (*ops)(quiesce_node&, quiesce_op) noexcept = nullptr;
};

// Bit 0: closed (a fork is being prepared or runs). Bits 1-31: the fork epoch.
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> quiesce_gate_{0};
// Threads waiting on the gate word: the end of a fork wakes only if non-zero.
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> quiesce_gate_waiters_{0};
// Quiesce locks (exclusive or shared) this thread holds: gate waits only at depth 0.
FORKSAFE_PROCESS_UNIQUE inline thread_local std::uint32_t quiesce_depth_{0};

/// Owner ids from here up are fork tags (thread ids stay below 2^30).
inline constexpr std::uint32_t fork_tag_base = 1U << 30;

/// The fork tag of the epoch in gate word `gate`.
inline std::uint32_t fork_tag(std::uint32_t gate) noexcept { return fork_tag_base | ((gate >> 1) & (fork_tag_base - 1)); }
inline bool is_fork_tag(std::uint32_t owner) noexcept { return owner >= fork_tag_base; }

/// Whether fork tag `owner` belongs to the fork being prepared or run now.
/// Tags are only written while the gate is closed, so with the gate open
/// every tag is stale, even one whose 30-bit epoch has come round again.
inline bool current_fork_tag(std::uint32_t owner, std::uint32_t gate) noexcept {
  return (gate & 1) != 0 && owner == fork_tag(gate);
}

/// Longest a thread waits at the closed gate before taking its lock anyway.
inline constexpr std::chrono::milliseconds max_gate_wait{10};

/// Waits (at most `timeout`, nullptr: until it changes) while the gate word is `seen`.
inline void wait_on_gate(std::uint32_t seen, const timespec* timeout) noexcept {
  quiesce_gate_waiters_.fetch_add(1, std::memory_order_seq_cst);
  futex_wait(quiesce_gate_, seen, timeout);
  quiesce_gate_waiters_.fetch_sub(1, std::memory_order_relaxed);
}

FORKSAFE_NOINLINE inline void wait_at_gate() noexcept {
  const auto until = std::chrono::steady_clock::now() + max_gate_wait;
  for (;;) {
    const std::uint32_t gate = quiesce_gate_.load(std::memory_order_acquire);
    if ((gate & 1) == 0) return;
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= left.zero()) return;
    const timespec ts = to_timespec(left);
    wait_on_gate(gate, &ts);
  }
}

/// Called before a quiesce lock is taken: waits (bounded) while a fork is
/// being prepared, unless this thread already holds a quiesce lock.
inline void pass_gate() noexcept {
  if (FORKSAFE_UNLIKELY((quiesce_gate_.load(std::memory_order_relaxed) & 1) != 0) && quiesce_depth_ == 0) {
    wait_at_gate();
  }
}

/// What a quiesce lock does when it finds a lock taken: a tag of an ended
/// fork is free (take it over); a tag of the fork in progress means wait
/// for the fork to end; a thread's id means wait on the lock.
struct quiesce_hook {
  contended_action operator()(std::uint32_t owner) const noexcept {
    if (FORKSAFE_LIKELY(!is_fork_tag(owner))) return contended_action::wait;
    const std::uint32_t gate = quiesce_gate_.load(std::memory_order_acquire);
    if (!current_fork_tag(owner, gate)) return contended_action::take_over;
    wait_on_gate(gate, nullptr);
    return contended_action::retry;
  }
};

/// True if `owner` is a fork tag whose fork has ended (the lock is free).
inline bool stale_fork_tag(std::uint32_t owner) noexcept {
  return is_fork_tag(owner) && !current_fork_tag(owner, quiesce_gate_.load(std::memory_order_acquire));
}

class FORKSAFE_PROCESS_UNIQUE quiesce_domain {
public:
  static quiesce_domain& instance() {
    static quiesce_domain* const domain = new quiesce_domain(); // leaky, like the registry
    return *domain;
  }

  void link(quiesce_node& n) noexcept {
    const bool mine = lock_list();
    n.prev = head_.prev;
    n.next = &head_;
    head_.prev->next = &n;
    head_.prev = &n;
    unlock_list(mine);
  }

  void unlink(quiesce_node& n) noexcept {
    const bool mine = lock_list();
    n.prev->next = n.next;
    n.next->prev = n.prev;
    unlock_list(mine);
  }

  /// Called by a node's try_take on the forking thread: the child must call
  /// fix_child on it (something a tag alone cannot express).
  void needs_child_fix() noexcept { child_fixes_ = true; }

  /// The tag locks are taken under in the fork being prepared.
  [[nodiscard]] static std::uint32_t current_tag() noexcept {
    return fork_tag(quiesce_gate_.load(std::memory_order_relaxed));
  }

private:
  quiesce_domain() {
    head_.prev = head_.next = &head_;
    // Never reset: the domain lives as long as the process.
    handle_ = atfork_registry::instance().add([this] { return prepare(); }, [this] { end_fork(false); },
                                              [this] { end_fork(true); });
  }

  // Locks the list unless this thread already holds it (it is the forking
  // thread, constructing or destroying a lock inside a fork handler).
  bool lock_list() noexcept {
    const std::uint32_t me = this_thread_id();
    if (list_lock_.owner() == me) return false;
    list_lock_.lock(me);
    return true;
  }
  void unlock_list(bool mine) noexcept {
    if (mine) list_lock_.unlock();
  }

  bool prepare() noexcept {
    quiesce_gate_.fetch_or(1, std::memory_order_relaxed);
    list_lock_.lock(this_thread_id()); // held until end_fork: no lock comes or goes meanwhile
    child_fixes_ = false;
    for (quiesce_node* n = head_.next; n != &head_; n = n->next) {
      if (!n->ops(*n, quiesce_op::try_take)) {
        for (quiesce_node* p = n->prev; p != &head_; p = p->prev) p->ops(*p, quiesce_op::give_back);
        list_lock_.unlock();
        abandon_epoch();
        return false; // the gate stays closed while the registry backs off
      }
    }
    return true;
  }

  // A pass that backs out moves to a new epoch, the gate still closed. A
  // thread that met one of the locks this pass tagged sleeps until the gate
  // word changes: it may hold the very lock that made the pass fail (it
  // holds B and wants A, A was tagged, B was busy), so it must wake now,
  // not when the fork ends, which waits for it. Tags of the abandoned epoch
  // are stale, so it takes over whatever it finds tagged.
  void abandon_epoch() noexcept {
    quiesce_gate_.fetch_add(2, std::memory_order_seq_cst); // epoch e+1, still closed
    if (quiesce_gate_waiters_.load(std::memory_order_seq_cst) != 0) futex_wake(quiesce_gate_, INT_MAX);
  }

  // Opens the gate into a new epoch: every lock tagged for this fork is free.
  void end_fork(bool in_child) noexcept {
    if (in_child) {
      if (child_fixes_) {
        for (quiesce_node* n = head_.next; n != &head_; n = n->next) n->ops(*n, quiesce_op::fix_child);
      }
      list_lock_.reset_in_child();
      quiesce_gate_.store((quiesce_gate_.load(std::memory_order_relaxed) | 1) + 1, std::memory_order_relaxed);
      quiesce_gate_waiters_.store(0, std::memory_order_relaxed); // its waiters did not survive
      return;
    }
    list_lock_.unlock();
    quiesce_gate_.fetch_add(1, std::memory_order_seq_cst); // closed epoch e -> open epoch e+1
    if (quiesce_gate_waiters_.load(std::memory_order_seq_cst) != 0) futex_wake(quiesce_gate_, INT_MAX);
  }

  owner_lock list_lock_;
  quiesce_node head_;
  bool child_fixes_ = false;
  atfork_handle handle_;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP
