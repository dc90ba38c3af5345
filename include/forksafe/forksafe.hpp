// SPDX-License-Identifier: MIT
//
// forksafe/forksafe.hpp: every public forksafe header. Include this, or only
// the component you use:
//   <forksafe/atfork_registry.hpp>              fork handlers: removable, ordered, bounded; guard()
//   <forksafe/fork_safe_mutex.hpp>              mutexes a forked child never hangs on
//   <forksafe/fork_safe_shared_mutex.hpp>       the reader/writer one
//   <forksafe/fork_safe_condition_variable.hpp> a condition variable for them
//   <forksafe/trivially_serializable.hpp>       what may cross a process boundary
//   <forksafe/child_error.hpp>                  how a child ended without a value
//   <forksafe/fork_call.hpp>                    run a callable in a child, get its value
//   <forksafe/process_result.hpp>               the handle on that child (or a pool task)
//   <forksafe/process_pool.hpp>                 pre-forked workers
//
// Every forksafe header also defines FORKSAFE_VERSION_MAJOR, _MINOR, _PATCH
// and FORKSAFE_VERSION (major * 10000 + minor * 100 + patch), and stops with
// #error below C++20 or on a system without fork() (neither __unix__ nor
// __APPLE__).

#ifndef FORKSAFE_FORKSAFE_HPP
#define FORKSAFE_FORKSAFE_HPP

#include "detail/config.hpp"

#include "atfork_registry.hpp"
#include "child_error.hpp"
#include "fork_call.hpp"
#include "fork_safe_condition_variable.hpp"
#include "fork_safe_mutex.hpp"
#include "fork_safe_shared_mutex.hpp"
#include "process_pool.hpp"
#include "process_result.hpp"
#include "trivially_serializable.hpp"

/// \namespace forksafe
/// Every public name of forksafe. They live in an inline namespace,
/// forksafe::abi_vN (N: FORKSAFE_ABI_VERSION), so that two versions of forksafe
/// in one process (in two plugins, say) never merge: write them as
/// forksafe::name. Names under forksafe::detail are not part of the API.

#endif // FORKSAFE_FORKSAFE_HPP
