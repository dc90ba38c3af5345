// SPDX-License-Identifier: MIT
//
// forksafe/detail/quiesce_domain.hpp: how quiesce-policy locks are taken
// before fork() and released after it.
//
// Every live quiesce lock is a node in one intrusive list (linking costs no
// allocation and O(1)). The domain is one atfork_registry entry: its prepare
// try-locks every node the forking thread does not already hold and, if one
// is busy, releases what it took and says "not now", so the registry backs
// off and retries; the fork never waits on a lock while holding another, so
// it cannot deadlock against a thread that holds A and wants B.
//
// A try-lock alone can starve: a thread that unlocks and at once relocks
// leaves the forker a window of nanoseconds. So the prepare also closes a
// gate: while it is closed, a thread that holds no quiesce lock waits before
// taking one (holders of one may take more, so they can finish and release).
// The wait is bounded (max_gate_wait), so a thread that also holds a lock of
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
  try_take,      ///< take the lock for the fork unless this thread holds it; false if busy
  release,       ///< after fork in the parent: undo try_take
  release_child, ///< after fork in the child: undo try_take, nobody else can wait
};

struct quiesce_node {
  quiesce_node* prev = nullptr;
  quiesce_node* next = nullptr;
  bool (*ops)(quiesce_node&, quiesce_op) noexcept = nullptr;
};

FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> quiesce_gate_{0}; // 0 open, 1 closed
// Quiesce locks (exclusive or shared) this thread holds: gate waits only at depth 0.
FORKSAFE_PROCESS_UNIQUE inline thread_local std::uint32_t quiesce_depth_{0};

/// Longest a thread waits at the closed gate before taking its lock anyway.
inline constexpr std::chrono::milliseconds max_gate_wait{10};

FORKSAFE_NOINLINE inline void wait_at_gate() noexcept {
  const auto until = std::chrono::steady_clock::now() + max_gate_wait;
  while (quiesce_gate_.load(std::memory_order_acquire) != 0) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= left.zero()) return;
    const timespec ts = to_timespec(left);
    futex_wait(quiesce_gate_, 1, &ts);
  }
}

/// Called before a quiesce lock is taken: waits (bounded) while a fork is
/// being prepared, unless this thread already holds a quiesce lock.
inline void pass_gate() noexcept {
  if (FORKSAFE_UNLIKELY(quiesce_gate_.load(std::memory_order_relaxed) != 0) && quiesce_depth_ == 0) {
    wait_at_gate();
  }
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

private:
  quiesce_domain() {
    head_.prev = head_.next = &head_;
    // Never reset: the domain lives as long as the process.
    handle_ = atfork_registry::instance().add([this] { return prepare(); },
                                              [this] { after_fork(quiesce_op::release); },
                                              [this] { after_fork(quiesce_op::release_child); });
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
    quiesce_gate_.store(1, std::memory_order_relaxed);
    list_lock_.lock(this_thread_id()); // held until after_fork: no lock comes or goes meanwhile
    for (quiesce_node* n = head_.next; n != &head_; n = n->next) {
      if (!n->ops(*n, quiesce_op::try_take)) {
        for (quiesce_node* p = n->prev; p != &head_; p = p->prev) p->ops(*p, quiesce_op::release);
        list_lock_.unlock();
        return false; // the gate stays closed while the registry backs off
      }
    }
    return true;
  }

  void after_fork(quiesce_op op) noexcept {
    for (quiesce_node* n = head_.next; n != &head_; n = n->next) n->ops(*n, op);
    if (op == quiesce_op::release_child) {
      list_lock_.reset_in_child();
      quiesce_gate_.store(0, std::memory_order_relaxed);
      return;
    }
    list_lock_.unlock();
    quiesce_gate_.store(0, std::memory_order_release);
    futex_wake(quiesce_gate_, INT_MAX);
  }

  owner_lock list_lock_;
  quiesce_node head_;
  atfork_handle handle_;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_QUIESCE_DOMAIN_HPP
