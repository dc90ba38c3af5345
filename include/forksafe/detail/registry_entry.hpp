// SPDX-License-Identifier: MIT
//
// forksafe/detail/registry_entry.hpp: one registration in the fork handler
// registry, as the registry sees it: plain data and one function pointer
// into the code of whoever registered it. The registry (shared by every copy
// of forksafe in the process, see process_hub.hpp) never calls a
// std::function or a destructor of another object's making directly, so the
// layout below is the whole interface between copies; it is part of hub_abi.

#ifndef FORKSAFE_DETAIL_REGISTRY_ENTRY_HPP
#define FORKSAFE_DETAIL_REGISTRY_ENTRY_HPP

#include "config.hpp"

#include <cstddef> // std::size_t
#include <cstdint> // fixed-width fields

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// What the registry asks of an entry.
enum class entry_op : std::uint32_t {
  try_prepare,      ///< get ready without blocking; true: ready, false: "not now"
  prepare_until,    ///< get ready, blocking until args.deadline_ns at most; true: ready
  parent,           ///< after fork() in the parent, and to undo a prepare
  child,            ///< after fork() in the child
  prepare_partial,  ///< the prepare timed out: get as ready as possible now, never block; true: wholly
  child_unprepared, ///< in the child of a fork that went on without this entry (its prepare timed out)
  describe,         ///< write why it refuses (best effort) into args.text
  destroy,          ///< the registry is done with it: free it
};

/// Arguments of an entry_op.
struct entry_args {
  std::int64_t deadline_ns = 0; ///< prepare_until: steady_clock nanoseconds since its epoch
  char* text = nullptr;         ///< describe: where to write, NUL-terminated
  std::size_t text_capacity = 0;
};

/// Bits of registry_entry::caps: what the entry can do.
inline constexpr std::uint32_t entry_can_try = 1;         ///< has a try_prepare
inline constexpr std::uint32_t entry_can_wait = 2;        ///< has a prepare_until
inline constexpr std::uint32_t entry_has_parent = 4;      ///< has a parent handler
inline constexpr std::uint32_t entry_has_child = 8;       ///< has a child handler
inline constexpr std::uint32_t entry_has_unprepared = 16; ///< wants child_unprepared
inline constexpr std::uint32_t entry_can_describe = 32;   ///< answers describe
inline constexpr std::uint32_t entry_can_partial = 64;    ///< answers prepare_partial (then takes part)

/// Bits of registry_entry::flags: the registry's own, written only on rare
/// paths (a change made from inside a handler, a fork that timed out), never
/// on an ordinary fork: after fork() every page is copy-on-write, and a
/// write per entry would cost a page fault per page of entries.
inline constexpr std::uint32_t entry_added_in_fork = 1; ///< takes part from the next fork on
inline constexpr std::uint32_t entry_self_removed = 2;  ///< removed from inside its own handler
inline constexpr std::uint32_t entry_unprepared = 4;    ///< this fork went on without it

struct registry_entry;

/// What the registry calls on an entry: one table per kind of entry, static
/// in the registrant's code (a hand-made vtable, so the layout is ours).
struct entry_type {
  /// Every operation. Never throws (the registrant terminates instead).
  bool (*invoke)(registry_entry&, entry_op, const entry_args&) noexcept;
  /// The two calls every fork makes, straight: try_prepare, and parent or
  /// child (`in_child`). Null: through invoke.
  bool (*try_prepare)(registry_entry&) noexcept;
  void (*after_fork)(registry_entry&, bool in_child) noexcept;
  /// For reports: the entry's name, "" without one. Lives as long as the entry.
  const char* (*name)(const registry_entry&) noexcept;
};

/// One registration. Allocated and freed by its registrant (op destroy),
/// linked and unlinked by the registry under its list lock. 32 bytes, so
/// that the first handler a registrant's type puts after it shares its cache
/// line: in a forked child every entry is a cache miss, and the child's loop
/// then touches one line per entry.
struct registry_entry {
  registry_entry* prev = nullptr;
  registry_entry* next = nullptr;
  const entry_type* type = nullptr;
  std::uint32_t caps = 0;
  std::uint32_t flags = 0;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_REGISTRY_ENTRY_HPP
