// SPDX-License-Identifier: MIT
//
// forksafe/detail/guard_traits.hpp: how atfork_registry::guard() takes,
// waits for, and gives back a lock the program does not own. The public
// customisation point is forksafe::atfork_guard_traits (atfork_registry.hpp);
// these are its building blocks.

#ifndef FORKSAFE_DETAIL_GUARD_TRAITS_HPP
#define FORKSAFE_DETAIL_GUARD_TRAITS_HPP

#include "config.hpp"
#include "deadlines.hpp"

#include <cerrno>       // EINTR
#include <chrono>       // deadlines
#include <concepts>     // std::same_as
#include <ctime>        // timespec; CLOCK_MONOTONIC (POSIX: the <time.h> it includes defines it)
#include <memory>       // std::construct_at
#include <mutex>        // std::recursive_mutex, std::recursive_timed_mutex
#include <shared_mutex> // std::shared_mutex, std::shared_timed_mutex
#include <type_traits>  // std::is_default_constructible_v

#include <pthread.h> // pthread_mutex_clocklock, pthread_rwlock_clockwrlock

#if defined(__linux__)
#include <sys/syscall.h> // SYS_gettid
#include <unistd.h>      // syscall
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Whether the calling thread holds a pthread mutex (glibc records the
/// owner's kernel thread id in every kind of mutex). False where that cannot
/// be told.
inline bool pthread_mutex_held_by_caller(const pthread_mutex_t* m) noexcept {
#if defined(__GLIBC__) && defined(__linux__)
  return m->__data.__owner != 0 && m->__data.__owner == static_cast<int>(::syscall(SYS_gettid));
#else
  (void)m;
  return false;
#endif
}

// ThreadSanitizer (clang 14) does not intercept the CLOCK_MONOTONIC waits
// (pthread_mutex_clocklock, pthread_rwlock_clockwrlock): a lock taken with
// them looks free to it, and its unlock is then reported. Under TSan the
// realtime waits it does intercept are used, with the deadline converted.
#if defined(__SANITIZE_THREAD__)
#define FORKSAFE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORKSAFE_TSAN 1
#endif
#endif
#ifndef FORKSAFE_TSAN
#define FORKSAFE_TSAN 0
#endif

/// `t` as an absolute CLOCK_REALTIME timespec, for the realtime timed waits.
inline timespec realtime_timespec(std::chrono::steady_clock::time_point t) noexcept {
  const auto left = t - std::chrono::steady_clock::now();
  return monotonic_timespec(
      std::chrono::steady_clock::time_point(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::system_clock::now().time_since_epoch() + left)));
}

/// Locks a pthread mutex, waiting until `t` at most. True if locked.
inline bool pthread_mutex_lock_until(pthread_mutex_t* m, std::chrono::steady_clock::time_point t) noexcept {
#if FORKSAFE_TSAN
  const timespec ts = realtime_timespec(t);
  int rc;
  do {
    rc = ::pthread_mutex_timedlock(m, &ts);
  } while (rc == EINTR);
  return rc == 0;
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
  const timespec ts = monotonic_timespec(t);
  int rc;
  do {
    rc = ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
  } while (rc == EINTR);
  return rc == 0;
#else
  (void)t;
  return ::pthread_mutex_lock(m) == 0;
#endif
}

template <class L>
concept pthread_mutex_backed = requires(L& l) {
  { l.native_handle() } -> std::same_as<pthread_mutex_t*>;
};

template <class L>
concept timed_lockable = requires(L& l, std::chrono::steady_clock::time_point t) {
  { l.try_lock_until(t) } -> std::convertible_to<bool>;
};

/// Waits for `l` until `t`: try_lock_until when it has one, a timed lock on
/// its pthread mutex when it is one, otherwise a plain lock() (unbounded).
template <class L>
bool lock_until(L& l, std::chrono::steady_clock::time_point t) {
  if constexpr (timed_lockable<L>) {
    return l.try_lock_until(t);
#if defined(__GLIBCXX__) && defined(_GLIBCXX_USE_PTHREAD_RWLOCK_T) && defined(__GLIBC__) &&                            \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
  } else if constexpr (std::is_same_v<L, std::shared_mutex>) {
    // libstdc++'s std::shared_mutex is a pthread_rwlock_t (native_handle() is a void* to it).
    int rc;
    do {
#if FORKSAFE_TSAN
      const timespec ts = realtime_timespec(t);
      rc = ::pthread_rwlock_timedwrlock(static_cast<pthread_rwlock_t*>(l.native_handle()), &ts);
#else
      const timespec ts = monotonic_timespec(t);
      rc = ::pthread_rwlock_clockwrlock(static_cast<pthread_rwlock_t*>(l.native_handle()), CLOCK_MONOTONIC, &ts);
#endif
    } while (rc == EINTR);
    return rc == 0;
#endif
  } else if constexpr (pthread_mutex_backed<L>) {
    return pthread_mutex_lock_until(l.native_handle(), t);
  } else {
    l.lock();
    return true;
  }
}

template <class L>
bool held_by_caller(L& l) noexcept {
  if constexpr (pthread_mutex_backed<L>) {
    return pthread_mutex_held_by_caller(l.native_handle());
  } else {
    (void)l;
    return false;
  }
}

/// Kinds whose unlock in a forked child does not work: glibc checks that the
/// unlocking thread is the owner by kernel thread id, and the child's thread
/// has a new one (recursive mutexes fail with EPERM; a reader-writer lock
/// takes the reader's path). They are made anew in the child instead, as
/// glibc does for its own locks; the data they guard is whole, since the
/// fork held them.
template <class L>
inline constexpr bool remade_in_child =
    std::is_same_v<L, std::recursive_mutex> || std::is_same_v<L, std::recursive_timed_mutex> ||
    std::is_same_v<L, std::shared_mutex> || std::is_same_v<L, std::shared_timed_mutex>;

template <class L>
void release_in_child(L& l) {
  if constexpr (remade_in_child<L>) {
    std::construct_at(&l); // over the inherited object, without running its destructor
  } else {
    l.unlock();
  }
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_GUARD_TRAITS_HPP
