// SPDX-License-Identifier: MIT
//
// forksafe/fork_safe_mutex.hpp: mutexes a forked child never hangs on.
//
// Defines:
//   fork_policy                    what a child sees for a lock another thread held at fork().
//   fork_poisoned                  thrown by a poison-policy lock whose holder did not survive fork().
//   basic_fork_safe_mutex<P>       exclusive mutex (Mutex requirements); fork_safe_mutex = <quiesce>.
// The reader/writer mutex, basic_fork_safe_shared_mutex<P> and
// fork_safe_shared_mutex, is in <forksafe/fork_safe_shared_mutex.hpp>
// (included at the end of this header).
//
// The bug they cure: fork() copies only the calling thread. A mutex another
// thread held at that moment stays locked in the child, whose first lock()
// then waits forever for a thread that does not exist there.
//
// | policy  | at fork()                                  | in the child                         | guarded data in the child |
// |---------|--------------------------------------------|--------------------------------------|---------------------------|
// | quiesce | the forking thread takes every live quiesce| unlocked (poisoned if the fork's     | consistent: no critical   |
// |(default)| lock first; released after fork in parent  | prepare timed out while another      | section was in progress   |
// |         | and child                                  | thread held it)                      |                           |
// | reset   | nothing                                    | behaves as unlocked (lazily, O(1))   | may be mid-update         |
// | poison  | nothing                                    | lock()/try_lock() throw fork_poisoned| the child decides         |
// |         |                                            | until clear_poison(); parent as ever |                           |
//
// All policies: a lock held by the forking thread itself stays held by that
// thread in the child and is unlocked normally there; a lock nobody held is
// simply unlocked. For the shared mutex the table holds for writers and
// readers alike: readers that vanished with the fork never block the child.
//
// Choosing: quiesce when the child uses the guarded data (the fix of the
// first article that motivates forksafe, built in; costs the fork a try_lock
// per live quiesce lock, ~15-20 ns each (docs/benchmarks.md), and delays a
// fork until a moment when no other thread holds a quiesce lock, for at most
// the registry's prepare timeout). reset when the child never trusts the
// data, or re-initialises it, and forks must not wait. poison when the child
// should find out and decide.
//
// What a fork waits for (quiesce): the end of every critical section in
// progress on another thread; threads that hold no quiesce lock wait at the
// fork's gate meanwhile, and are let through if the fork has seen no lock
// released for 100 ms (a cycle through a lock forksafe cannot see). When no
// moment comes within the prepare timeout (a thread walking hand over hand
// round a ring of quiesce locks never holds none; a holder blocked for ever
// on something else; a thread that forks holding quiesce lock A while
// another holds B and waits for A), fork() goes on: the locks still held
// are poisoned in the child (lock() and try_lock() throw fork_poisoned there
// until clear_poison()), and a line on stderr says so.
//
// Built on one atomic word holding the owner's thread id (never on
// pthread_mutex_t, whose unlock in a child is undefined for owner-checked
// kinds), waiting with futexes on Linux. Neither fair nor recursive.
// Thread ids, and so the child's view, are maintained by atfork_registry's
// child handler, which runs on fork() but not on vfork, posix_spawn, clone
// or _Fork.

#ifndef FORKSAFE_FORK_SAFE_MUTEX_HPP
#define FORKSAFE_FORK_SAFE_MUTEX_HPP

#include "atfork_registry.hpp"
#include "detail/config.hpp"
#include "detail/owner_lock.hpp"
#include "detail/process_hub.hpp"
#include "detail/quiesce_domain.hpp"

#include <atomic>       // reader count, generation stamp
#include <cerrno>       // ENOLCK
#include <climits>      // INT_MAX
#include <cstdint>      // std::uint32_t
#include <system_error> // fork_poisoned, ENOLCK
#include <thread>       // std::this_thread::yield
#include <type_traits>  // std::conditional_t, std::is_standard_layout_v

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE {

/// What a forked child sees for a lock that another thread held when fork()
/// was called. See the table at the top of this header.
enum class fork_policy {
  quiesce, ///< fork() waits until no other thread holds it; the child gets it unlocked
  reset,   ///< the child gets it unlocked, whatever state the data is in
  poison,  ///< the child's lock()/try_lock() throw fork_poisoned until clear_poison()
};

/// Thrown in a forked child by lock(), try_lock() (and the shared forms) of a
/// poison-policy mutex that a thread which did not survive the fork held,
/// or of a quiesce mutex a fork whose prepare timed out could not take, until
/// clear_poison(). code() is std::errc::owner_dead. Never thrown in the
/// process where that thread lives.
class fork_poisoned : public std::system_error {
public:
  fork_poisoned()
      : std::system_error(std::make_error_code(std::errc::owner_dead),
                          "forksafe: the mutex was held by a thread that did not survive fork(); "
                          "call clear_poison() once the guarded data is repaired") {}
};

namespace detail {
template <int N>
struct empty_part {}; // distinct types, so [[no_unique_address]] members can share an address

// quiesce: fork tags (quiesce_hook). reset: take over from a vanished owner.
// poison: throw for a vanished owner. Otherwise wait.
template <fork_policy P>
struct vanished_owner_hook {
  contended_action operator()(std::uint32_t owner) const {
    if (!thread_vanished(owner)) return contended_action::wait;
    if constexpr (P == fork_policy::poison) throw fork_poisoned();
    return contended_action::take_over;
  }
};
template <>
struct vanished_owner_hook<fork_policy::quiesce> : quiesce_hook<fork_poisoned> {};
} // namespace detail

/// An exclusive mutex that a forked child never hangs on; P chooses what the
/// child sees (see fork_policy). Meets the Mutex requirements: std::lock_guard,
/// std::unique_lock, std::scoped_lock and std::condition_variable_any work,
/// as does fork_safe_condition_variable.
///
/// Thread-safety: as std::mutex. unlock() requires that the calling thread
/// holds the lock. Locking a mutex the caller already holds deadlocks, as
/// std::mutex may. Not copyable, not movable: the address is its identity
/// (quiesce mutexes are linked into the process's quiesce list). Private to
/// one process: not for memory shared between processes.
///
/// quiesce: fork() retries until no other thread holds the lock (see the
/// caveat at the top of this header); the forking thread's own locks are
/// not waited for and stay held by it in the child.
///
/// Cost: sizeof is 32 bytes for quiesce, 4 for reset and poison (std::mutex:
/// 40). Uncontended lock+unlock is two atomic RMWs, like std::mutex, inlined;
/// quiesce adds a relaxed load of the fork gate and a per-thread counter.
/// Constructing a quiesce mutex links it into a list under a short lock;
/// reset and poison mutexes are constexpr-constructible and cost nothing.
template <fork_policy P = fork_policy::quiesce>
class basic_fork_safe_mutex {
  static constexpr bool quiesce = P == fork_policy::quiesce;

public:
  /// P, for generic code.
  static constexpr fork_policy policy = P;

  /// Unlocked. A quiesce mutex links itself into the process's quiesce list
  /// (it may wait for a fork in progress to finish); the first one also
  /// creates that list and its atfork_registry entry, and std::terminate is
  /// called if that allocation fails (noexcept). The others are constexpr.
  basic_fork_safe_mutex() noexcept requires quiesce {
    node_.ops = &quiesce_ops;
    detail::link_quiesce(node_);
  }
  constexpr basic_fork_safe_mutex() noexcept requires(!quiesce) = default;

  /// Requires: not locked. A quiesce mutex unlinks itself (it may wait for a
  /// fork in progress to finish).
  ~basic_fork_safe_mutex() {
    if constexpr (quiesce) detail::unlink_quiesce(node_);
  }

  basic_fork_safe_mutex(const basic_fork_safe_mutex&) = delete; // a mutex has identity
  basic_fork_safe_mutex& operator=(const basic_fork_safe_mutex&) = delete;

  /// Blocks until the lock is acquired, with no limit. quiesce: while a fork
  /// is being prepared, a thread that holds no quiesce lock first waits for
  /// it (see the top of this header), and a lock taken for the fork in
  /// progress is waited for until that fork ends; in a child, throws
  /// fork_poisoned if a fork whose prepare timed out could not take it.
  /// reset: in a child, a lock a vanished thread held is taken over (never
  /// throws). poison: throws fork_poisoned in a child if a vanished thread
  /// held the lock.
  void lock() noexcept(P == fork_policy::reset) {
    detail::thread_record& me = detail::this_thread();
    if constexpr (quiesce) detail::pass_gate();
    lock_.lock(me.id, detail::vanished_owner_hook<P>{});
    if constexpr (quiesce) ++me.quiesce_depth;
  }

  /// Acquires the lock if it is free, without blocking (quiesce: not even at
  /// the fork gate; a lock taken for a fork in progress is busy). False if
  /// held, also by the calling thread. In a child, a lock held by a vanished
  /// thread is free for reset, and throws fork_poisoned for poison (and for
  /// quiesce, as lock() does).
  [[nodiscard]] bool try_lock() noexcept(P == fork_policy::reset) {
    detail::thread_record& me = detail::this_thread();
    if (FORKSAFE_LIKELY(lock_.try_lock(me.id)) || take_over_if_free(me.id)) {
      if constexpr (quiesce) ++me.quiesce_depth;
      return true;
    }
    return false;
  }

  /// Requires: the calling thread holds the lock.
  void unlock() noexcept {
    if constexpr (quiesce) --detail::this_thread().quiesce_depth;
    lock_.unlock();
  }

  /// poison and quiesce: true in a child while the lock is poisoned (see
  /// lock()) until clear_poison(). Best effort: racy against clear_poison().
  [[nodiscard]] bool poisoned() const noexcept requires(P != fork_policy::reset) {
    const std::uint32_t owner = lock_.owner();
    if constexpr (quiesce) {
      return owner == detail::poisoned_owner;
    } else {
      return owner != 0 && detail::thread_vanished(owner);
    }
  }

  /// poison and quiesce: declares the guarded data repaired; the mutex
  /// becomes unlocked (waking one waiter) if it was poisoned. Harmless when
  /// not poisoned.
  void clear_poison() noexcept requires(P != fork_policy::reset) {
    if (poisoned()) lock_.release_if_owner(lock_.owner());
  }

private:
  // try_lock found it taken: it is still free to take if held by a stale fork
  // tag (quiesce) or a vanished thread (reset); poison throws for the latter.
  bool take_over_if_free(std::uint32_t me) {
    const std::uint32_t owner = lock_.owner();
    if (owner == 0) return false;
    if constexpr (quiesce) {
      if (FORKSAFE_UNLIKELY(owner == detail::poisoned_owner)) throw fork_poisoned();
      return detail::stale_fork_tag(owner) && lock_.take_over(owner, me);
    } else {
      return detail::vanished_owner_hook<P>{}(owner) == detail::contended_action::take_over &&
             lock_.take_over(owner, me);
    }
  }

  // The quiesce list's view of this mutex (node_ is the first member of a
  // standard-layout class, so the node's address is the mutex's).
  static std::int64_t quiesce_ops(detail::quiesce_node& n, detail::quiesce_op op, std::int64_t arg) noexcept {
    static_assert(std::is_standard_layout_v<basic_fork_safe_mutex>);
    auto& m = reinterpret_cast<basic_fork_safe_mutex&>(n);
    const std::uint32_t tag = detail::current_tag();
    const std::uint32_t owner = m.lock_.owner();
    switch (op) {
    case detail::quiesce_op::try_take:
      if (owner == detail::this_thread_id()) return 1; // the forking thread's own: skip
      if (owner == 0)
        return m.lock_.try_lock(tag, arg != 0, std::memory_order_acq_rel) ? 1 : 0; // after the gate closed
      return detail::stale_fork_tag(owner) && m.lock_.replace_owner(owner, tag) ? 1 : 0;
    case detail::quiesce_op::give_back:
      if (owner == tag) m.lock_.unlock();
      return 1;
    case detail::quiesce_op::wait_free:
      if (owner != 0 && !detail::stale_fork_tag(owner)) m.lock_.wait_while(m.lock_.word(), arg);
      return 1;
    case detail::quiesce_op::holder: return owner;
    case detail::quiesce_op::mark_busy: m.fork_mark_ = 1; return 1;
    case detail::quiesce_op::fix_child:
      if (m.fork_mark_ != 0) {
        m.fork_mark_ = 0;
        // Its holder vanished mid-update: poisoned, unless it is the survivor's.
        if (owner != detail::this_thread_id()) m.lock_.force_owner_in_child(detail::poisoned_owner);
      }
      return 1;
    case detail::quiesce_op::fix_parent:
      if (m.fork_mark_ != 0) m.fork_mark_ = 0;
      return 1;
    }
    return 1;
  }

  [[no_unique_address]] std::conditional_t<quiesce, detail::quiesce_node, detail::empty_part<0>> node_{};
  detail::owner_lock lock_;
  // quiesce: 1 while a fork whose prepare timed out goes on without it.
  [[no_unique_address]] std::conditional_t<quiesce, unsigned char, detail::empty_part<1>> fork_mark_{};
};

/// The drop-in replacement for std::mutex: the quiesce policy.
using fork_safe_mutex = basic_fork_safe_mutex<>;

} // namespace forksafe

#include "fork_safe_shared_mutex.hpp" // it lived here: code that included only this header still finds it

#endif // FORKSAFE_FORK_SAFE_MUTEX_HPP
