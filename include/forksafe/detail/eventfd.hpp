// SPDX-License-Identifier: MIT
//
// forksafe/detail/eventfd.hpp: an eventfd as a doorbell: process_pool's
// workers and submitting threads ring it, its supervisor thread waits on it,
// and a pool task's handle is one a caller can poll.

#ifndef FORKSAFE_DETAIL_EVENTFD_HPP
#define FORKSAFE_DETAIL_EVENTFD_HPP

#include "config.hpp"
#include "system_errors.hpp"

#include <cerrno>  // errno
#include <cstdint> // std::uint64_t

#include <sys/eventfd.h> // eventfd
#include <unistd.h>      // read, write

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// A non-blocking, close-on-exec eventfd. Throws std::system_error (EMFILE, ENFILE).
inline int make_eventfd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw_errno(errno, "forksafe::process_pool: eventfd failed");
  return fd;
}

/// Makes `fd` readable. Best effort: a full counter is readable already.
inline void ring(int fd) noexcept {
  const std::uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

/// Reads the counter back to zero, if it was rung.
inline void drain(int fd) noexcept {
  std::uint64_t n;
  (void)!::read(fd, &n, sizeof n);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_EVENTFD_HPP
