// SPDX-License-Identifier: MIT
//
// forksafe/detail/unique_fd.hpp: an owned file descriptor.

#ifndef FORKSAFE_DETAIL_UNIQUE_FD_HPP
#define FORKSAFE_DETAIL_UNIQUE_FD_HPP

#include "config.hpp"

#include <utility> // std::exchange

#include <unistd.h> // close

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// An owned file descriptor. Move-only.
class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete; // one owner closes
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Gives the descriptor up without closing it.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the descriptor. close() is not retried on EINTR: Linux releases
  /// the descriptor even then, and a retry could close a reused number.
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_UNIQUE_FD_HPP
