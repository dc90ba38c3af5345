// SPDX-License-Identifier: MIT
//
// forksafe/detail/owner_process.hpp: the process that made an object which
// stands for processes, mappings or descriptors of that process. fork()
// copies the object into the child, where it must touch nothing of its
// maker's (not signal its children, not unmap its mappings, not take locks a
// vanished thread may hold): one type says "an inherited copy: hands off".

#ifndef FORKSAFE_DETAIL_OWNER_PROCESS_HPP
#define FORKSAFE_DETAIL_OWNER_PROCESS_HPP

#include "config.hpp"

#include <sys/types.h> // pid_t
#include <unistd.h>    // getpid

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// The process that made an object. Empty (no process) until set().
class owner_process {
public:
  /// The calling process.
  [[nodiscard]] static owner_process current() noexcept {
    owner_process p;
    p.set();
    return p;
  }
  /// Records the calling process as the owner.
  void set() noexcept { pid_ = ::getpid(); }
  /// True in the process that called set().
  [[nodiscard]] bool here() const noexcept { return pid_ == ::getpid(); }
  /// True in a process forked from the owner: an inherited copy, inert.
  [[nodiscard]] bool inherited() const noexcept { return pid_ != -1 && pid_ != ::getpid(); }

private:
  pid_t pid_ = -1;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_OWNER_PROCESS_HPP
