// SPDX-License-Identifier: MIT
//
// forksafe/detail/thread_identity.hpp: small per-process thread ids that say,
// in a forked child, whether a lock's owner still exists there.
//
// A kernel TID cannot serve: the thread that survives fork() gets a new one,
// which is exactly why owner-checked pthread mutexes fail in the child. These
// ids live in thread_local storage, which fork() copies, so the survivor
// keeps its id. The registry's child handler records, before any user
// handler runs, the survivor's id and the first id the child will hand out:
// an owner id below that, and not the survivor's, belonged to a thread that
// did not survive.

#ifndef FORKSAFE_DETAIL_THREAD_IDENTITY_HPP
#define FORKSAFE_DETAIL_THREAD_IDENTITY_HPP

#include "config.hpp"

#include <atomic>  // std::atomic
#include <cstdint> // std::uint32_t

namespace forksafe::detail {

// Process-unique (see FORKSAFE_PROCESS_UNIQUE): one counter for every shared
// library of the program. Ids are 30 bits (lock words keep a flag beside
// them, and ids from 2^30 up mark locks taken for a fork); a process would
// need 2^30 threads over its life to wrap.
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> next_thread_id{1};
FORKSAFE_PROCESS_UNIQUE inline thread_local std::uint32_t this_thread_id_{0};
// Set in a child by the registry: ids below first_id_of_generation, other
// than survivor_id, belong to threads that did not survive a fork.
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> first_id_of_generation{0};
FORKSAFE_PROCESS_UNIQUE inline std::atomic<std::uint32_t> survivor_id{0};

/// The shared (reader) locks of fork-safe shared mutexes this thread holds,
/// so a child can tell the survivor's read locks from those of threads that
/// vanished. A thread may hold at most `capacity` at once.
struct shared_holds {
  static constexpr std::uint32_t capacity = 32;
  const void* held[capacity];
  std::uint32_t count;

  /// How many read locks on `m` this list holds.
  [[nodiscard]] std::uint32_t holds_of(const void* m) const noexcept {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < count; ++i) n += held[i] == m ? 1 : 0;
    return n;
  }
};
FORKSAFE_PROCESS_UNIQUE inline thread_local shared_holds shared_holds_{};
// Set in a child: the surviving thread's list, readable by threads created there.
FORKSAFE_PROCESS_UNIQUE inline std::atomic<const shared_holds*> survivor_holds{nullptr};

FORKSAFE_NOINLINE inline std::uint32_t assign_thread_id() noexcept {
  this_thread_id_ = next_thread_id.fetch_add(1, std::memory_order_relaxed) & 0x3fffffffU;
  return this_thread_id_;
}

/// This thread's id: non-zero, 30 bits, stable across fork() for the survivor.
inline std::uint32_t this_thread_id() noexcept {
  const std::uint32_t id = this_thread_id_;
  return FORKSAFE_LIKELY(id != 0) ? id : assign_thread_id();
}

/// True if the thread with `id` existed in an ancestor process but not here.
inline bool thread_vanished(std::uint32_t id) noexcept {
  return id < first_id_of_generation.load(std::memory_order_relaxed) &&
         id != survivor_id.load(std::memory_order_relaxed);
}

/// Called in a forked child by the registry, before any user handler.
inline void record_fork_survivor() noexcept {
  survivor_id.store(this_thread_id(), std::memory_order_relaxed);
  survivor_holds.store(&shared_holds_, std::memory_order_relaxed);
  first_id_of_generation.store(next_thread_id.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_THREAD_IDENTITY_HPP
