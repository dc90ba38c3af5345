// SPDX-License-Identifier: MIT
//
// forksafe/fork_safe_shared_mutex.hpp: a reader/writer mutex a forked child
// never hangs on, as writer or reader.
//
// Defines:
//   basic_fork_safe_shared_mutex<P>  reader/writer mutex (SharedMutex requirements)
//   fork_safe_shared_mutex           = basic_fork_safe_shared_mutex<fork_policy::quiesce>
//
// The policies are those of <forksafe/fork_safe_mutex.hpp> (see its table),
// for writers and readers alike: readers that vanished with the fork never
// block the child.

#ifndef FORKSAFE_FORK_SAFE_SHARED_MUTEX_HPP
#define FORKSAFE_FORK_SAFE_SHARED_MUTEX_HPP

#include "atfork_registry.hpp"
#include "detail/config.hpp"
#include "detail/deadlines.hpp"
#include "detail/futex.hpp"
#include "detail/owner_lock.hpp"
#include "detail/process_hub.hpp"
#include "detail/quiesce_domain.hpp"
#include "fork_safe_mutex.hpp"

#include <atomic>       // reader count, generation stamp
#include <cerrno>       // ENOLCK
#include <chrono>       // the fork's timed waits
#include <climits>      // INT_MAX
#include <cstdint>      // std::uint32_t
#include <system_error> // ENOLCK
#include <thread>       // std::this_thread::yield
#include <type_traits>  // std::conditional_t, std::is_standard_layout_v

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// A reader/writer mutex that a forked child never hangs on, for writers or
/// readers; P chooses what the child sees (see fork_policy). Meets the
/// SharedMutex requirements: std::shared_lock and std::unique_lock work.
/// Writers are preferred: once a writer waits, new readers wait behind it.
///
/// Thread-safety: as std::shared_mutex. Each thread may hold at most 32 read
/// locks of fork-safe shared mutexes (all policies together) at once; they
/// are tracked per thread so a child can tell the survivor's read locks from
/// vanished ones, so a read lock must be released by the thread that took
/// it. One more throws std::system_error(ENOLCK). A thread must not lock, in
/// either mode, a mutex it already holds: a second read lock deadlocks once
/// a writer waits. Not copyable, not movable. Private to one process.
///
/// reset and poison repair a mutex inherited from a parent lazily, on its
/// first use in the child (any lock call, poisoned() or clear_poison()): one
/// relaxed load of fork_generation() per lock call decides. quiesce needs no
/// repair: fork() waits until no other thread holds it, as writer or reader
/// (a writer still waiting only for the forking thread's own read locks does
/// not hold the fork up; the child forgets that writer).
template <fork_policy P = fork_policy::quiesce>
class basic_fork_safe_shared_mutex {
  static constexpr bool quiesce = P == fork_policy::quiesce;
  static constexpr std::uint32_t writer_waits = 1U << 31; // in readers_: a writer waits for them to drain
  static constexpr std::uint32_t count_mask = writer_waits - 1;
  static constexpr std::uint32_t repairing = 0xffffffffU; // in generation_

public:
  /// P, for generic code.
  static constexpr fork_policy policy = P;

  /// Unlocked. quiesce: links itself into the quiesce list, as
  /// basic_fork_safe_mutex does (may wait for a fork in progress; the first
  /// one may std::terminate if allocating the list fails). reset and poison:
  /// record the current fork_generation().
  basic_fork_safe_shared_mutex() noexcept {
    if constexpr (quiesce) {
      node_.ops = &quiesce_ops;
      detail::link_quiesce(node_);
    } else {
      generation_.store(static_cast<std::uint32_t>(fork_generation()), std::memory_order_relaxed);
    }
  }
  /// Requires: not locked, in either mode. A quiesce mutex unlinks itself (it
  /// may wait for a fork in progress to finish).
  ~basic_fork_safe_shared_mutex() {
    if constexpr (quiesce) detail::unlink_quiesce(node_);
  }
  basic_fork_safe_shared_mutex(const basic_fork_safe_shared_mutex&) = delete; // identity
  basic_fork_safe_shared_mutex& operator=(const basic_fork_safe_shared_mutex&) = delete;

  /// Exclusive lock: blocks, with no limit, until no writer and no reader
  /// holds it; once it waits, new readers wait behind it. quiesce: waits at
  /// the fork gate first, as basic_fork_safe_mutex::lock(). reset: in a
  /// child, locks that vanished threads held were dropped. poison: throws
  /// fork_poisoned in a child if a vanished thread held it, as writer or
  /// reader, until clear_poison(); quiesce: fork_poisoned in a child as
  /// basic_fork_safe_mutex::lock(); reset never throws.
  void lock() {
    detail::thread_record& me = enter();
    if constexpr (quiesce) {
      writer_.lock(me.id, detail::quiesce_hook<fork_poisoned>{});
    } else {
      writer_.lock(me.id); // vanished owners were dealt with on entry (repair_if_forked)
    }
    std::atomic_thread_fence(std::memory_order_seq_cst); // pairs with a reader's increment-then-check
    drain_readers();
    if constexpr (quiesce) ++me.quiesce_depth;
  }

  /// Takes the exclusive lock if no writer and no reader holds it (quiesce:
  /// a lock taken for a fork in progress is busy), without blocking or
  /// waiting at the fork gate. poison: throws fork_poisoned as lock() does.
  [[nodiscard]] bool try_lock() {
    detail::thread_record& me = try_enter();
    if (!writer_.try_lock(me.id, std::memory_order_seq_cst) && !take_stale_writer(me.id)) return false;
    if ((readers_.load(std::memory_order_seq_cst) & count_mask) != 0) {
      writer_.unlock_all();
      return false;
    }
    if constexpr (quiesce) ++me.quiesce_depth;
    return true;
  }

  /// Requires: the calling thread holds the exclusive lock.
  void unlock() noexcept {
    if constexpr (quiesce) --detail::this_thread().quiesce_depth;
    writer_.unlock_all(); // readers wait on the writer word too
  }

  /// Shared lock: blocks, with no limit, while a writer holds or waits for
  /// the lock. quiesce: waits at the fork gate first, as lock(). Throws
  /// std::system_error(ENOLCK, code() == std::errc::no_lock_available) if
  /// this thread already holds 32 read locks (nothing is taken); poison:
  /// fork_poisoned as for lock().
  void lock_shared() {
    enter();
    reserve_hold();
    for (bool waited = false;; waited = true) {
      const std::uint32_t w = writer_.word(std::memory_order_seq_cst);
      if (w != 0) {
        wait_for_writer(w);
        continue;
      }
      if constexpr (quiesce) {
        // Woken while a fork is being prepared and holds this thread back:
        // wait for it, as lock() does, rather than start a section it must
        // then wait for.
        if (waited && FORKSAFE_UNLIKELY(detail::held_back(detail::gate_word().load(std::memory_order_acquire)))) {
          detail::wait_at_gate();
          continue;
        }
      }
      if (try_add_reader()) break;
    }
    record_hold();
  }

  /// Takes a shared lock if no writer holds or waits for it, without
  /// blocking or waiting at the fork gate. Throws as lock_shared() does.
  [[nodiscard]] bool try_lock_shared() {
    try_enter();
    reserve_hold();
    if constexpr (quiesce) {
      const std::uint32_t owner = writer_.owner();
      if (FORKSAFE_UNLIKELY(owner == detail::poisoned_owner)) throw fork_poisoned();
      if (detail::stale_fork_tag(owner)) writer_.release_if_owner(owner, INT_MAX);
    }
    if (writer_.word(std::memory_order_seq_cst) != 0 || !try_add_reader()) return false;
    record_hold();
    return true;
  }

  /// Requires: the calling thread holds a shared lock it took itself.
  void unlock_shared() noexcept {
    forget_hold();
    if constexpr (quiesce) --detail::this_thread().quiesce_depth;
    remove_reader();
  }

  /// poison and quiesce: true in a child while it is poisoned (poison: a
  /// thread that did not survive the fork held it, as writer or reader;
  /// quiesce: see lock()), until clear_poison().
  [[nodiscard]] bool poisoned() const noexcept requires(P != fork_policy::reset) {
    if constexpr (quiesce) {
      return writer_.owner() == detail::poisoned_owner;
    } else {
      const_cast<basic_fork_safe_shared_mutex*>(this)->repair_if_forked();
      return poisoned_.load(std::memory_order_relaxed);
    }
  }

  /// poison and quiesce: declares the guarded data repaired; locks that
  /// vanished threads held are dropped. Harmless when not poisoned.
  void clear_poison() noexcept requires(P != fork_policy::reset) {
    if constexpr (quiesce) {
      writer_.release_if_owner(detail::poisoned_owner, INT_MAX);
    } else {
      repair_if_forked();
      if (!poisoned_.load(std::memory_order_relaxed)) return;
      drop_vanished_holders();
      poisoned_.store(false, std::memory_order_relaxed);
    }
  }

private:
  // Common entry of every lock call; returns this thread's record.
  detail::thread_record& enter() {
    if constexpr (quiesce) detail::pass_gate();
    return try_enter();
  }
  detail::thread_record& try_enter() {
    if constexpr (!quiesce) {
      repair_if_forked();
      if constexpr (P == fork_policy::poison) {
        if (FORKSAFE_UNLIKELY(poisoned_.load(std::memory_order_relaxed))) throw fork_poisoned();
      }
    }
    return detail::this_thread();
  }

  // A reader found the writer word taken.
  void wait_for_writer(std::uint32_t w) {
    if constexpr (quiesce) {
      const std::uint32_t owner = w >> 1;
      if (FORKSAFE_UNLIKELY(owner == detail::poisoned_owner)) throw fork_poisoned();
      if (detail::is_fork_tag(owner)) {
        // Waits for the fork in progress to end, or frees a stale tag.
        if (detail::quiesce_hook<fork_poisoned>{}(owner) == detail::contended_action::take_over) {
          writer_.release_if_owner(owner, INT_MAX);
        }
        return;
      }
    }
    writer_.wait_while(w);
  }

  bool take_stale_writer(std::uint32_t me) noexcept {
    if constexpr (quiesce) {
      const std::uint32_t owner = writer_.owner();
      return detail::stale_fork_tag(owner) && writer_.take_over(owner, me);
    } else {
      return false;
    }
  }

  bool try_add_reader() noexcept {
    readers_.fetch_add(1, std::memory_order_seq_cst);
    if (FORKSAFE_LIKELY(writer_.word(std::memory_order_seq_cst) == 0)) return true;
    remove_reader(); // a writer came first: step back so it can drain us
    return false;
  }

  void remove_reader() noexcept {
    const std::uint32_t before = readers_.fetch_sub(1, std::memory_order_release);
    if (FORKSAFE_UNLIKELY((before & writer_waits) != 0 && (before & count_mask) == 1)) {
      detail::futex_wake(readers_, INT_MAX);
    }
  }

  void drain_readers() noexcept {
    for (;;) {
      std::uint32_t r = readers_.load(std::memory_order_seq_cst);
      if ((r & count_mask) == 0) break;
      if ((r & writer_waits) == 0 && !readers_.compare_exchange_weak(r, r | writer_waits, std::memory_order_seq_cst)) {
        continue;
      }
      detail::futex_wait(readers_, r | writer_waits);
    }
    readers_.fetch_and(count_mask, std::memory_order_relaxed);
  }

  static void reserve_hold() {
    if (detail::this_thread().holds.count == detail::shared_holds::capacity) {
      throw std::system_error(ENOLCK, std::generic_category(),
                              "forksafe: a thread may hold at most 32 fork-safe shared locks at once");
    }
  }
  void record_hold() noexcept {
    detail::thread_record& me = detail::this_thread();
    me.holds.held[me.holds.count++] = this;
    if constexpr (quiesce) ++me.quiesce_depth;
  }
  void forget_hold() noexcept {
    auto& h = detail::this_thread().holds;
    for (std::uint32_t i = h.count; i-- > 0;) {
      if (h.held[i] == this) {
        h.held[i] = h.held[--h.count];
        return;
      }
    }
  }

  // reset / poison: on the first use in a child, make the inherited state
  // describe only what the surviving thread holds (reset), or note that a
  // vanished thread held it (poison).
  void repair_if_forked() noexcept {
    if constexpr (!quiesce) {
      const auto now = static_cast<std::uint32_t>(fork_generation());
      std::uint32_t seen = generation_.load(std::memory_order_acquire);
      while (FORKSAFE_UNLIKELY(seen != now)) {
        if (seen == repairing) {
          std::this_thread::yield();
          seen = generation_.load(std::memory_order_acquire);
          continue;
        }
        if (!generation_.compare_exchange_weak(seen, repairing, std::memory_order_acquire)) continue;
        if constexpr (P == fork_policy::reset) {
          drop_vanished_holders();
        } else {
          poisoned_.store(vanished_holders(), std::memory_order_relaxed);
        }
        generation_.store(now, std::memory_order_release);
        return;
      }
    }
  }

  [[nodiscard]] std::uint32_t survivor_reads() const noexcept {
    const detail::shared_holds* h = detail::hub().survivor_holds.load(std::memory_order_relaxed);
    return h != nullptr ? h->holds_of(this) : 0;
  }
  [[nodiscard]] bool vanished_holders() const noexcept {
    const std::uint32_t owner = writer_.owner();
    return (owner != 0 && detail::thread_vanished(owner)) ||
           (readers_.load(std::memory_order_relaxed) & count_mask) > survivor_reads();
  }
  void drop_vanished_holders() noexcept {
    const std::uint32_t owner = writer_.owner();
    if (owner != 0 && detail::thread_vanished(owner)) writer_.reset_in_child();
    readers_.store(survivor_reads(), std::memory_order_relaxed);
  }

  // The quiesce list's view of this mutex. Taken for the fork: the writer
  // word holds the fork tag and the only readers are the forking thread's.
  // A writer that waits for the forking thread's read locks to drain has not
  // entered either: then the writer word keeps its (parent-side) owner, and
  // the child, where that writer does not exist, repairs it in fix_child.
  static std::int64_t quiesce_ops(detail::quiesce_node& n, detail::quiesce_op op, std::int64_t arg) noexcept {
    static_assert(std::is_standard_layout_v<basic_fork_safe_shared_mutex>);
    auto& m = reinterpret_cast<basic_fork_safe_shared_mutex&>(n);
    const std::uint32_t tag = detail::current_tag();
    switch (op) {
    case detail::quiesce_op::try_take: {
      if (m.taken_for_fork_ != 0) m.taken_for_fork_ = 0;
      const std::uint32_t owner = m.writer_.owner();
      if (owner == detail::this_thread_id()) return 1; // the forking thread writes: skip
      const std::uint32_t mine = detail::this_thread().holds.holds_of(&m);
      const bool taken = owner == 0 ? m.writer_.try_lock(tag, arg != 0, std::memory_order_seq_cst)
                                    : detail::stale_fork_tag(owner) && m.writer_.replace_owner(owner, tag);
      if (taken) {
        std::atomic_thread_fence(std::memory_order_seq_cst); // pairs with a reader's increment-then-check
        if ((m.readers_.load(std::memory_order_seq_cst) & count_mask) == mine) {
          // A reader may still increment, see the tag and step back; if
          // fork() falls between its two steps, the child has a count
          // for a thread that does not exist there: fix_child drops it.
          m.taken_for_fork_ = taken_by_tag;
          detail::needs_fix_in_child();
          return 1;
        }
        m.writer_.unlock_all();
        return 0;
      }
      if (mine != 0 && !detail::is_fork_tag(owner) &&
          (m.readers_.load(std::memory_order_seq_cst) & count_mask) == mine) {
        m.taken_for_fork_ = writer_waits_on_us; // a writer waits on our read locks
        detail::needs_fix_in_child();
        return 1;
      }
      return 0;
    }
    case detail::quiesce_op::give_back:
      if (m.writer_.owner() == tag) m.writer_.unlock_all();
      if (m.taken_for_fork_ != 0) m.taken_for_fork_ = 0;
      return 1;
    case detail::quiesce_op::wait_free: {
      const std::uint32_t w = m.writer_.word(std::memory_order_seq_cst);
      const std::uint32_t owner = w >> 1;
      if (owner != 0 && !detail::stale_fork_tag(owner) && owner != detail::this_thread_id()) {
        m.writer_.wait_while(w, arg);
        return 1;
      }
      // Readers: ask the last one out to wake us (the writer_waits flag),
      // and sleep on the count.
      std::uint32_t r = m.readers_.load(std::memory_order_seq_cst);
      if ((r & count_mask) <= detail::this_thread().holds.holds_of(&m)) return 1;
      if ((r & writer_waits) == 0 && !m.readers_.compare_exchange_strong(r, r | writer_waits)) return 1;
      const std::int64_t left = arg - detail::steady_ns();
      if (left > 0) {
        const timespec ts = detail::to_timespec(std::chrono::nanoseconds(left));
        detail::futex_wait(m.readers_, r | writer_waits, &ts);
      }
      return 1;
    }
    case detail::quiesce_op::holder: {
      const std::uint32_t owner = m.writer_.owner();
      return owner != 0 ? std::int64_t{owner}
                        : -static_cast<std::int64_t>(m.readers_.load(std::memory_order_relaxed) & count_mask);
    }
    case detail::quiesce_op::mark_busy: m.taken_for_fork_ = left_out; return 1;
    case detail::quiesce_op::fix_child: {
      const std::uint32_t mine = detail::this_thread().holds.holds_of(&m);
      if (m.taken_for_fork_ == writer_waits_on_us) {
        m.writer_.reset_in_child(); // the waiting writer did not survive
        m.readers_.store(mine, std::memory_order_relaxed);
      } else if (m.taken_for_fork_ == taken_by_tag) {
        // Taken under the tag: the only read locks are the forking thread's.
        // Written only when a vanished reader's step is in the count, so
        // the usual child does not copy this page.
        if (m.readers_.load(std::memory_order_relaxed) != mine) m.readers_.store(mine, std::memory_order_relaxed);
      } else if (m.taken_for_fork_ == left_out && m.writer_.owner() != detail::this_thread_id()) {
        // Held by threads that vanished mid-update: poisoned.
        m.writer_.force_owner_in_child(detail::poisoned_owner);
        m.readers_.store(mine, std::memory_order_relaxed);
      }
      if (m.taken_for_fork_ != 0) m.taken_for_fork_ = 0;
      return 1;
    }
    case detail::quiesce_op::fix_parent:
      if (m.taken_for_fork_ == left_out) m.taken_for_fork_ = 0;
      return 1;
    }
    return 1;
  }

  // taken_for_fork_ (quiesce): what the fork being prepared did with it.
  static constexpr unsigned char taken_by_tag = 2;       // the writer word holds the fork tag
  static constexpr unsigned char writer_waits_on_us = 1; // a writer waits for the forking thread's reads
  static constexpr unsigned char left_out = 4;           // a fork whose prepare timed out could not take it

  [[no_unique_address]] std::conditional_t<quiesce, detail::quiesce_node, detail::empty_part<0>> node_{};
  detail::owner_lock writer_;             // a writer, or a writer waiting for readers to drain
  std::atomic<std::uint32_t> readers_{0}; // read locks held; writer_waits flag
  [[no_unique_address]] std::conditional_t<quiesce, detail::empty_part<1>, std::atomic<std::uint32_t>>
      generation_{}; // reset/poison: generation the state describes
  [[no_unique_address]] std::conditional_t<P == fork_policy::poison, std::atomic<bool>, detail::empty_part<2>>
      poisoned_{};
  [[no_unique_address]] std::conditional_t<quiesce, unsigned char, detail::empty_part<3>> taken_for_fork_{};
};

/// The drop-in replacement for std::shared_mutex: the quiesce policy.
using fork_safe_shared_mutex = basic_fork_safe_shared_mutex<>;

} // namespace forksafe

#endif // FORKSAFE_FORK_SAFE_SHARED_MUTEX_HPP
