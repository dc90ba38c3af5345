// SPDX-License-Identifier: MIT
//
// forksafe/fork_safe_condition_variable.hpp: a condition variable a forked
// child never hangs on.
//
// Defines fork_safe_condition_variable, for std::unique_lock of a
// fork_safe_mutex of any policy (any BasicLockable works).
//
// Why not std::condition_variable: a pthread_cond_t keeps a record of its
// waiters. In a child those waiters are gone, but the record is not, and
// pthread_cond_destroy or a later wait can block on them (glibc waits for
// "waiters that are gone"). This one keeps no record that a child could
// trust: a wait is one futex wait on a sequence word, so inherited state can
// at worst cost each notify in the child a wake-up system call (the waiter
// count it inherited from vanished waiters never drops back to zero).

#ifndef FORKSAFE_FORK_SAFE_CONDITION_VARIABLE_HPP
#define FORKSAFE_FORK_SAFE_CONDITION_VARIABLE_HPP

#include "detail/config.hpp"
#include "detail/deadlines.hpp"
#include "detail/futex.hpp"
#include "fork_safe_mutex.hpp"

#include <atomic>             // sequence word, waiter count
#include <cerrno>             // EINTR: a signal is not a wake-up
#include <chrono>             // wait_for, wait_until
#include <climits>            // INT_MAX
#include <condition_variable> // std::cv_status
#include <cstdint>            // std::uint32_t
#include <mutex>              // std::unique_lock

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// A condition variable for `std::unique_lock<basic_fork_safe_mutex<P>>` (any
/// P; any BasicLockable works). Same contract as std::condition_variable_any:
/// wait() atomically releases the lock and blocks until notified, then
/// reacquires the lock; spurious wake-ups happen, so wait in a loop or use the
/// predicate forms. A signal handler that runs during a wait is not a
/// wake-up: the wait goes on for the time left (an EINTR storm cannot make
/// wait_for return early, tested).
///
/// Fork: a child never hangs in wait, notify or the destructor because of
/// waiters that existed before the fork; those waiters simply do not exist
/// there. Note that reacquiring a poison-policy mutex may throw
/// fork_poisoned.
///
/// Thread-safety: all members may be called concurrently. notify_* need not
/// hold the lock. Not copyable, not movable. Private to one process. No
/// allocation; never throws except what unlocking or relocking throws: if
/// relocking throws, the exception propagates and `lock` does not own its
/// mutex. Destroying it requires that no thread of this process waits on it.
class fork_safe_condition_variable {
public:
  constexpr fork_safe_condition_variable() noexcept = default;
  fork_safe_condition_variable(const fork_safe_condition_variable&) = delete; // waiters hold its address
  fork_safe_condition_variable& operator=(const fork_safe_condition_variable&) = delete;

  /// Wakes one waiting thread, if any.
  void notify_one() noexcept { notify(1); }
  /// Wakes every waiting thread.
  void notify_all() noexcept { notify(INT_MAX); }

  /// Requires: `lock` owns its mutex. Atomically releases it and blocks,
  /// with no limit, until notified (or spuriously); then relocks it.
  template <class Mutex>
  void wait(std::unique_lock<Mutex>& lock) {
    block(lock, nullptr);
  }

  /// Waits until stop_waiting() is true; it is called with the lock held,
  /// first before any wait.
  template <class Mutex, class Predicate>
  void wait(std::unique_lock<Mutex>& lock, Predicate stop_waiting) {
    while (!stop_waiting()) wait(lock);
  }

  /// Blocks until notified, spuriously, or `deadline`; timeout when the
  /// clock has reached it. A deadline already passed returns timeout at once,
  /// without unlocking. The time left is turned into one relative wait, so a
  /// jump of Clock during the wait is only seen when the wait ends.
  template <class Mutex, class Clock, class Duration>
  std::cv_status wait_until(std::unique_lock<Mutex>& lock, const std::chrono::time_point<Clock, Duration>& deadline) {
    const auto left = deadline - Clock::now();
    if (left <= left.zero()) return std::cv_status::timeout;
    const timespec ts = detail::to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(left));
    block(lock, &ts);
    return Clock::now() >= deadline ? std::cv_status::timeout : std::cv_status::no_timeout;
  }

  /// Waits until stop_waiting() is true or `deadline`; returns the last
  /// stop_waiting().
  template <class Mutex, class Clock, class Duration, class Predicate>
  bool wait_until(std::unique_lock<Mutex>& lock, const std::chrono::time_point<Clock, Duration>& deadline,
                  Predicate stop_waiting) {
    while (!stop_waiting()) {
      if (wait_until(lock, deadline) == std::cv_status::timeout) return stop_waiting();
    }
    return true;
  }

  /// wait_until(steady_clock::now() + timeout, rounded up to nanoseconds).
  template <class Mutex, class Rep, class Period>
  std::cv_status wait_for(std::unique_lock<Mutex>& lock, const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(lock, std::chrono::steady_clock::now() + ceil_ns(timeout));
  }

  /// The same with a predicate: wait_until(lock, steady_clock::now() + timeout,
  /// stop_waiting), the timeout rounded up to nanoseconds.
  template <class Mutex, class Rep, class Period, class Predicate>
  bool wait_for(std::unique_lock<Mutex>& lock, const std::chrono::duration<Rep, Period>& timeout,
                Predicate stop_waiting) {
    return wait_until(lock, std::chrono::steady_clock::now() + ceil_ns(timeout), std::move(stop_waiting));
  }

private:
  template <class Rep, class Period>
  static std::chrono::nanoseconds ceil_ns(const std::chrono::duration<Rep, Period>& d) {
    return std::chrono::ceil<std::chrono::nanoseconds>(d);
  }

  void notify(int count) noexcept {
    sequence_.fetch_add(1, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) detail::futex_wake(sequence_, count);
  }

  template <class Mutex>
  void block(std::unique_lock<Mutex>& lock, const timespec* timeout) {
    // The sequence is read before the lock is released: a notify after the
    // release changes it, and the futex wait then returns at once.
    const std::uint32_t seen = sequence_.load(std::memory_order_seq_cst);
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    lock.unlock();
    // A signal handler that ran is not a wake-up: wait again for what is
    // left, so a stream of signals cannot turn into a stream of spurious
    // returns (and a caller's wait_for loop into one that never ends).
    const auto until = timeout != nullptr ? std::chrono::steady_clock::now() + detail::to_duration(*timeout)
                                          : std::chrono::steady_clock::time_point::max();
    timespec left = timeout != nullptr ? *timeout : timespec{};
    while (detail::futex_wait(sequence_, seen, timeout != nullptr ? &left : nullptr) == EINTR) {
      if (timeout == nullptr) continue;
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) break;
      left = detail::to_timespec(until - now);
    }
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    lock.lock();
  }

  std::atomic<std::uint32_t> sequence_{0};
  std::atomic<std::uint32_t> waiters_{0}; // a hint: only saves the wake-up call when zero
};

} // namespace forksafe

#endif // FORKSAFE_FORK_SAFE_CONDITION_VARIABLE_HPP
