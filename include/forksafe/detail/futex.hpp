// SPDX-License-Identifier: MIT
//
// forksafe/detail/futex.hpp: wait on and wake a 32-bit atomic word, in one
// process or (a word in a MAP_SHARED mapping) across processes. On Linux
// these are futex calls (a timed wait is needed, which std::atomic::wait
// lacks); elsewhere a portable fallback, for one process only.

#ifndef FORKSAFE_DETAIL_FUTEX_HPP
#define FORKSAFE_DETAIL_FUTEX_HPP

#include "config.hpp"

#include <atomic>  // std::atomic<std::uint32_t>
#include <cerrno>  // errno: why a wait ended
#include <chrono>  // timed waits
#include <cstdint> // std::uint32_t
#include <ctime>   // timespec
#include <thread>  // fallback: std::this_thread::sleep_for

#if defined(__linux__)
#include <linux/futex.h> // FUTEX_WAIT(_PRIVATE), FUTEX_WAKE(_PRIVATE)
#include <sys/syscall.h> // SYS_futex
#include <unistd.h>      // syscall
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "forksafe's futex words need a lock-free 32-bit atomic with the size of uint32_t");

/// Blocks while `word == expected`, for at most `timeout` (nullptr: no limit).
/// May return early (spuriously, on a signal, or after a wake): callers loop.
/// Returns 0 after a wake, or the errno of the wait: EINTR (a signal
/// handler ran), ETIMEDOUT, EAGAIN (`word` was not `expected`).
/// `across_processes`: the word is in memory shared with other processes
/// (process_pool's slots), so the wait is not private to this one.
inline int futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const timespec* timeout = nullptr,
                      bool across_processes = false) noexcept {
#if defined(__linux__)
  const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word),
                            across_processes ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, expected, timeout, nullptr, 0);
  return rc == 0 ? 0 : errno;
#else
  if (timeout == nullptr) {
    word.wait(expected, std::memory_order_relaxed);
  } else if (word.load(std::memory_order_relaxed) == expected) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return 0;
#endif
}

/// Wakes up to `count` threads blocked in futex_wait on `word` (with the same
/// `across_processes`).
inline void futex_wake(std::atomic<std::uint32_t>& word, int count, bool across_processes = false) noexcept {
#if defined(__linux__)
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), across_processes ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE,
            count, nullptr, nullptr, 0);
#else
  if (count == 1) {
    word.notify_one();
  } else {
    word.notify_all();
  }
#endif
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_FUTEX_HPP
