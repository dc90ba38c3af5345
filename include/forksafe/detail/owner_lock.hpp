// SPDX-License-Identifier: MIT
//
// forksafe/detail/owner_lock.hpp: the lock word under every forksafe mutex
// and the registry. One 32-bit atomic: 0 when free, otherwise the owner's
// thread id shifted left by one, with bit 0 set when a thread may be waiting.
// Knowing the owner costs nothing extra and lets a forked child tell a lock
// held by a thread that did not survive (process_hub.hpp) from one held by
// itself. Waiting uses futexes, never pthread_mutex_t, whose unlock in a
// child is undefined for owner-checked kinds.

#ifndef FORKSAFE_DETAIL_OWNER_LOCK_HPP
#define FORKSAFE_DETAIL_OWNER_LOCK_HPP

#include "config.hpp"
#include "deadlines.hpp"
#include "futex.hpp"

#include <atomic>  // the lock word
#include <chrono>  // timed waits
#include <climits> // INT_MAX
#include <cstdint> // std::uint32_t

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// What a contended lock() should do, as decided by a policy hook.
enum class contended_action {
  wait,      ///< wait on the lock word
  take_over, ///< the owner does not hold it any more: take it from them
  retry,     ///< the hook already waited elsewhere: look again
};

struct wait_always {
  contended_action operator()(std::uint32_t /*owner*/) const noexcept { return contended_action::wait; }
};

class owner_lock {
public:
  static constexpr std::uint32_t waiters_bit = 1;

  constexpr owner_lock() noexcept = default;
  owner_lock(const owner_lock&) = delete; // a lock has identity
  owner_lock& operator=(const owner_lock&) = delete;

  [[nodiscard]] bool try_lock(std::uint32_t me, std::memory_order order = std::memory_order_acquire) noexcept {
    std::uint32_t expected = 0;
    return word_.compare_exchange_strong(expected, me << 1, order, std::memory_order_relaxed);
  }

  /// As try_lock, for a taker that waited on the word (wait_while): then it
  /// may have consumed a wake-up meant for another waiter, so the waiters bit
  /// is set (`waited`) and the next unlock wakes one again.
  [[nodiscard]] bool try_lock(std::uint32_t me, bool waited, std::memory_order order) noexcept {
    std::uint32_t expected = 0;
    return word_.compare_exchange_strong(expected, (me << 1) | (waited ? waiters_bit : 0U), order,
                                         std::memory_order_relaxed);
  }

  /// Locks. On contention asks `hook(owner)`: wait, or take the lock over
  /// from an owner that no longer exists (the reset policy).
  template <class Hook = wait_always>
  void lock(std::uint32_t me, Hook hook = {}) {
    if (FORKSAFE_LIKELY(try_lock(me))) return;
    lock_slow(me, hook);
  }

  void unlock() noexcept {
    if (FORKSAFE_UNLIKELY(word_.exchange(0, std::memory_order_release) & waiters_bit)) {
      futex_wake(word_, 1);
    }
  }

  /// The owner's id, 0 when free. Racy unless the caller is the owner: best effort.
  [[nodiscard]] std::uint32_t owner() const noexcept { return word_.load(std::memory_order_relaxed) >> 1; }

  /// Takes the lock over from `observed_owner` (who no longer holds it).
  /// The waiters bit is kept set, so a waiter that arrived after the fork is
  /// still woken at unlock. Returns false if the word changed meanwhile.
  bool take_over(std::uint32_t observed_owner, std::uint32_t me) noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    if ((w >> 1) != observed_owner || observed_owner == 0) return false;
    return word_.compare_exchange_strong(w, (me << 1) | waiters_bit, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  }

  /// The raw word: (owner << 1) | waiters bit.
  [[nodiscard]] std::uint32_t word(std::memory_order order = std::memory_order_relaxed) const noexcept {
    return word_.load(order);
  }

  /// Blocks while the word still equals `observed` (non-zero), after marking
  /// that a thread waits. For threads that wait for the lock to be free
  /// without taking it (readers of a shared mutex); unlock_all() wakes them.
  void wait_while(std::uint32_t observed) noexcept { wait_while(observed, -1); }

  /// As wait_while(observed), for at most until `deadline_ns` (steady_clock
  /// nanoseconds since its epoch; negative: no limit).
  void wait_while(std::uint32_t observed, std::int64_t deadline_ns) noexcept {
    if (observed == 0) return;
    if ((observed & waiters_bit) == 0 &&
        !word_.compare_exchange_strong(observed, observed | waiters_bit, std::memory_order_relaxed)) {
      return; // the word changed: look again
    }
    if (deadline_ns < 0) {
      futex_wait(word_, observed | waiters_bit);
      return;
    }
    const std::int64_t left = deadline_ns - std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::steady_clock::now().time_since_epoch())
                                                .count();
    if (left <= 0) return;
    const timespec ts = to_timespec(std::chrono::nanoseconds(left));
    futex_wait(word_, observed | waiters_bit, &ts);
  }

  /// In a forked child, where no other thread can be using this lock yet:
  /// makes `owner` its owner (a poisoned marker), without waking anyone.
  void force_owner_in_child(std::uint32_t owner) noexcept { word_.store(owner << 1, std::memory_order_relaxed); }

  /// Unlocks and wakes every waiter (for locks that readers wait on too).
  void unlock_all() noexcept {
    if (word_.exchange(0, std::memory_order_seq_cst) & waiters_bit) futex_wake(word_, INT_MAX);
  }

  /// Makes the word free without waking anyone. Only for a forked child
  /// in which no other thread can be using this lock yet.
  void reset_in_child() noexcept { word_.store(0, std::memory_order_relaxed); }

  /// Replaces owner `observed_owner` with `new_owner` (keeping the waiters
  /// bit), e.g. to take a lock whose owner is a stale fork tag.
  bool replace_owner(std::uint32_t observed_owner, std::uint32_t new_owner) noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    if ((w >> 1) != observed_owner) return false;
    return word_.compare_exchange_strong(w, (new_owner << 1) | (w & waiters_bit), std::memory_order_acq_rel,
                                         std::memory_order_relaxed);
  }

  /// Frees a lock whose owner no longer holds it (vanished, or a stale fork
  /// tag), waking up to `wake` waiters. Returns false if the word no longer
  /// names `observed_owner`.
  bool release_if_owner(std::uint32_t observed_owner, int wake = 1) noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    if ((w >> 1) != observed_owner || observed_owner == 0) return false;
    if (!word_.compare_exchange_strong(w, 0, std::memory_order_release, std::memory_order_relaxed)) return false;
    if (w & waiters_bit) futex_wake(word_, wake);
    return true;
  }

private:
  template <class Hook>
  FORKSAFE_NOINLINE void lock_slow(std::uint32_t me, Hook& hook) {
    for (;;) {
      // Acquire: an owner that is a fork tag was written after the gate was
      // closed; the hook, reading the gate next, must see it closed.
      std::uint32_t w = word_.load(std::memory_order_acquire);
      if (w == 0) {
        if constexpr (requires { hook.defer(); }) {
          if (FORKSAFE_UNLIKELY(hook.defer())) {
            // A fork is being prepared and holds this thread back: step
            // aside, passing on the wake-up that may have been meant for
            // the fork, and come back once it lets us.
            futex_wake(word_, 1);
            hook.wait_deferred();
            continue;
          }
        }
        // Having waited, take it with the waiters bit set: others may wait too.
        if (word_.compare_exchange_weak(w, (me << 1) | waiters_bit, std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
          return;
        }
        continue;
      }
      const contended_action action = hook(w >> 1);
      if (action == contended_action::take_over) {
        if (take_over(w >> 1, me)) return;
        continue;
      }
      if (action == contended_action::retry) continue;
      if ((w & waiters_bit) == 0 && !word_.compare_exchange_weak(w, w | waiters_bit, std::memory_order_relaxed)) {
        continue;
      }
      futex_wait(word_, w | waiters_bit);
    }
  }

  std::atomic<std::uint32_t> word_{0};
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_OWNER_LOCK_HPP
